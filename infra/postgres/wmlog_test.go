package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

func TestWatermillLoggerQuietsCancellations(t *testing.T) {
	var buf bytes.Buffer
	l := watermillLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))).
		With(watermill.LogFields{"consumer_group": "users"})
	l.Error("could not commit tx for querying message", fmt.Errorf("commit: %w", context.Canceled), nil)
	l.Error("could not query", errors.New("connection refused"), nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log %q", buf.String())
	}
	if !strings.Contains(lines[0], `"level":"DEBUG"`) || !strings.Contains(lines[0], "context canceled") ||
		!strings.Contains(lines[0], `"consumer_group":"users"`) {
		t.Errorf("a cancellation logged as %s", lines[0])
	}
	if !strings.Contains(lines[1], `"level":"ERROR"`) {
		t.Errorf("a real error logged as %s", lines[1])
	}
}
