package postgres

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// watermillLogger is watermill's slog adapter, except that an error which is only a cancelled
// context is logged at debug level: watermill-sql reports the batch transaction it cannot commit
// while a subscriber stops (at every shutdown, every leadership hand-over) as an ERROR, and
// operators learn to ignore errors that are not.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return quietCancel{watermill.NewSlogLogger(logger)}
}

type quietCancel struct{ watermill.LoggerAdapter }

func (q quietCancel) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) {
		q.Debug(msg, fields.Add(watermill.LogFields{"err": err.Error()}))
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietCancel) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietCancel{q.LoggerAdapter.With(fields)}
}
