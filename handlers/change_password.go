package handlers

import (
	"context"
	"errors"
	"fmt"

	"taki/commands"
	"taki/events"
)

// ChangePasswordHandler replaces a password after checking the current one, then ends every other
// session of the user (the caller re-issues the one it keeps). Wrong current passwords count against
// the same throttle as failed logins, so a stolen session cannot guess the password without limit.
type ChangePasswordHandler struct {
	store    *Store
	hasher   PasswordHasher
	sessions SessionRevoker
	throttle LoginThrottle
}

// NewChangePasswordHandler refuses nil dependencies.
func NewChangePasswordHandler(store *Store, hasher PasswordHasher, sessions SessionRevoker, throttle LoginThrottle) (*ChangePasswordHandler, error) {
	if store == nil || hasher == nil || sessions == nil || throttle == nil {
		return nil, errors.New("new change password handler: nil dependency")
	}
	return &ChangePasswordHandler{store: store, hasher: hasher, sessions: sessions, throttle: throttle}, nil
}

// Handle implements bus.CommandHandler.
func (h *ChangePasswordHandler) Handle(ctx context.Context, cmd commands.ChangePassword) (struct{}, error) {
	return struct{}{}, h.change(ctx, cmd)
}

func (h *ChangePasswordHandler) change(ctx context.Context, cmd commands.ChangePassword) error {
	u, err := load(ctx, h.store, users, cmd.Actor)
	if err != nil {
		return err
	}
	if !u.state.exists() {
		return commands.Unauthenticated("the acting user does not exist")
	}
	if err := h.throttle.Check(ctx, u.state.Email); err != nil {
		return err
	}
	ok, err := h.hasher.Verify(cmd.CurrentPassword, u.state.PasswordHash)
	if err != nil {
		return fmt.Errorf("verify password: %w", err)
	}
	if !ok {
		if err := h.throttle.Fail(ctx, u.state.Email); err != nil {
			return err
		}
		return commands.Invalid([]commands.FieldError{{Field: "current_password", Message: "is not correct"}})
	}
	if err := h.throttle.Succeed(ctx, u.state.Email); err != nil {
		return err
	}
	password, err := commands.NewPassword(cmd.NewPassword)
	if err != nil {
		return cmd.Validate()
	}
	hash, err := h.hasher.Hash(password.Reveal())
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	// Sessions end before the change is recorded: should the process die in between, the user has to
	// log in again with the old password, rather than other sessions outliving the change.
	if _, err := h.sessions.RevokeAllForUser(ctx, u.id, cmd.KeepSession); err != nil {
		return fmt.Errorf("revoke sessions before password change: %w", err)
	}
	if _, err := save(ctx, h.store, users, u, nil, events.UserPasswordChanged{UserID: u.id, PasswordHash: hash}); err != nil {
		return err
	}
	// And again after: a login that checked the old password just before the change may have started
	// a session in between.
	if _, err := h.sessions.RevokeAllForUser(ctx, u.id, cmd.KeepSession); err != nil {
		return fmt.Errorf("revoke sessions after password change: %w", err)
	}
	return nil
}
