package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// RegisterUserHandler creates accounts. The email is claimed in the same transaction as the
// registration, so racing registrations of one address make exactly one account.
type RegisterUserHandler struct {
	store  *Store
	hasher PasswordHasher
	now    func() time.Time
}

// NewRegisterUserHandler refuses nil dependencies.
func NewRegisterUserHandler(store *Store, hasher PasswordHasher, now func() time.Time) (*RegisterUserHandler, error) {
	if store == nil || hasher == nil || now == nil {
		return nil, errors.New("new register user handler: nil dependency")
	}
	return &RegisterUserHandler{store: store, hasher: hasher, now: now}, nil
}

// Handle implements bus.CommandHandler.
func (h *RegisterUserHandler) Handle(ctx context.Context, cmd commands.RegisterUser) (queries.User, error) {
	email, err := commands.NewEmail(cmd.Email)
	if err != nil {
		return queries.User{}, cmd.Validate()
	}
	password, err := commands.NewPassword(cmd.Password)
	if err != nil {
		return queries.User{}, cmd.Validate()
	}
	name, err := commands.NewDisplayName(cmd.DisplayName)
	if err != nil {
		return queries.User{}, cmd.Validate()
	}
	hash, err := h.hasher.Hash(password.Reveal())
	if err != nil {
		return queries.User{}, fmt.Errorf("hash password: %w", err)
	}
	l := loaded[user]{id: cmd.UserID}
	next, err := save(ctx, h.store, users, l, []events.Claim{{Kind: emailClaim, Value: email.String()}}, events.UserRegistered{
		UserID:       cmd.UserID,
		Email:        email.String(),
		DisplayName:  name.String(),
		PasswordHash: hash,
		Role:         string(commands.RoleMember),
		RegisteredAt: h.now().UTC().Truncate(time.Microsecond),
	})
	var taken *events.ClaimTakenError
	switch {
	case errors.As(err, &taken):
		return queries.User{}, commands.NewError(commands.KindEmailTaken, "an account with this email already exists")
	case errors.Is(err, events.ErrConflict):
		return queries.User{}, commands.Conflict("this user id is taken")
	case err != nil:
		return queries.User{}, err
	}
	return next.state.view(), nil
}
