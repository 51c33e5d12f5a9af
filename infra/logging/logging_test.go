package logging

import (
	"context"
	"testing"
)

type otherKey struct{}

func TestDetachKeepsTheIDsAndNothingElse(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), otherKey{}, "request state"))
	ctx := WithUserID(WithCausationID(WithCorrelationID(WithRequestID(parent, "req"), "corr"), "cause"), "user")
	cancel()
	d := Detach(ctx)
	if RequestID(d) != "req" || CorrelationID(d) != "corr" || CausationID(d) != "cause" || UserID(d) != "user" {
		t.Fatalf("ids %q %q %q %q", RequestID(d), CorrelationID(d), CausationID(d), UserID(d))
	}
	if d.Err() != nil || d.Done() != nil {
		t.Fatal("the detached context is cancelled with its parent")
	}
	if d.Value(otherKey{}) != nil {
		t.Fatal("the detached context keeps the parent's other values")
	}
	if RequestID(Detach(context.Background())) != "" {
		t.Fatal("ids out of nothing")
	}
}
