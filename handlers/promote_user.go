package handlers

import (
	"context"
	"errors"
	"fmt"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// PromoteUserHandler makes a user an admin and ends that user's sessions, so the new role only ever
// applies to sessions started after it (and a stolen session cannot keep old rights).
type PromoteUserHandler struct {
	store    *Store
	owners   ClaimOwners
	sessions SessionRevoker
}

// NewPromoteUserHandler refuses nil dependencies.
func NewPromoteUserHandler(store *Store, owners ClaimOwners, sessions SessionRevoker) (*PromoteUserHandler, error) {
	if store == nil || owners == nil || sessions == nil {
		return nil, errors.New("new promote user handler: nil dependency")
	}
	return &PromoteUserHandler{store: store, owners: owners, sessions: sessions}, nil
}

// Handle implements bus.CommandHandler.
func (h *PromoteUserHandler) Handle(ctx context.Context, cmd commands.PromoteUser) (queries.User, error) {
	email, err := commands.NewEmail(cmd.Email)
	if err != nil {
		return queries.User{}, cmd.Validate()
	}
	id, ok, err := h.owners.ClaimOwner(ctx, emailClaim, email.String())
	if err != nil {
		return queries.User{}, err
	}
	if !ok {
		return queries.User{}, commands.NotFound("user")
	}
	u, err := load(ctx, h.store, users, id)
	if err != nil {
		return queries.User{}, err
	}
	if !u.state.exists() {
		return queries.User{}, commands.NotFound("user")
	}
	// Sessions end before the change is recorded (see ChangePasswordHandler) and again after it, so that
	// a session started in between never carries the old role.
	if _, err := h.sessions.RevokeAllForUser(ctx, id, nil); err != nil {
		return queries.User{}, fmt.Errorf("revoke sessions before role change: %w", err)
	}
	if u.state.Role != string(commands.RoleAdmin) {
		if u, err = save(ctx, h.store, users, u, nil, events.UserRoleChanged{UserID: id, Role: string(commands.RoleAdmin)}); err != nil {
			return queries.User{}, err
		}
	}
	if _, err := h.sessions.RevokeAllForUser(ctx, id, nil); err != nil {
		return queries.User{}, fmt.Errorf("revoke sessions after role change: %w", err)
	}
	return u.state.view(), nil
}
