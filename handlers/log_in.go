package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// LogInHandler checks credentials and records the login. Every failure answers the same
// "unauthenticated" in about the same time, whether the email exists or not.
type LogInHandler struct {
	store    *Store
	owners   ClaimOwners
	hasher   PasswordHasher
	throttle LoginThrottle
	now      func() time.Time
}

// NewLogInHandler refuses nil dependencies.
func NewLogInHandler(store *Store, owners ClaimOwners, hasher PasswordHasher, throttle LoginThrottle, now func() time.Time) (*LogInHandler, error) {
	if store == nil || owners == nil || hasher == nil || throttle == nil || now == nil {
		return nil, errors.New("new log in handler: nil dependency")
	}
	return &LogInHandler{store: store, owners: owners, hasher: hasher, throttle: throttle, now: now}, nil
}

var errBadCredentials = commands.Unauthenticated("the email or password is not correct")

// LoggedIn is a successful login: the user, and the version of the user's stream the credentials
// were checked at (the login's own event). A session started for it must not outlive a password or
// role change recorded after that version (auth.Manager.Start checks).
type LoggedIn struct {
	User    queries.User
	Version int64
}

// Handle implements bus.CommandHandler.
func (h *LogInHandler) Handle(ctx context.Context, cmd commands.LogIn) (LoggedIn, error) {
	key := strings.ToLower(strings.TrimSpace(cmd.Email))
	if len(key) > 254 {
		key = key[:254]
	}
	if err := h.throttle.Check(ctx, key); err != nil {
		return LoggedIn{}, err
	}
	u, err := h.verify(ctx, cmd)
	if err != nil {
		if errors.Is(err, errBadCredentials) {
			if ferr := h.throttle.Fail(ctx, key); ferr != nil {
				return LoggedIn{}, ferr
			}
		}
		return LoggedIn{}, err
	}
	// The credentials are right: settle the throttle now, so that a retry of this command after a
	// concurrent write (which checks the throttle again) leaves no unsettled attempt behind.
	if err := h.throttle.Succeed(ctx, key); err != nil {
		return LoggedIn{}, err
	}
	next, err := save(ctx, h.store, users, u, nil, events.UserLoggedIn{UserID: u.id, At: h.now().UTC()})
	if err != nil {
		return LoggedIn{}, err
	}
	return LoggedIn{User: next.state.view(), Version: next.version}, nil
}

func (h *LogInHandler) verify(ctx context.Context, cmd commands.LogIn) (loaded[user], error) {
	email, err := commands.NewEmail(cmd.Email)
	if err != nil {
		h.hasher.VerifyDummy(cmd.Password)
		return loaded[user]{}, errBadCredentials
	}
	id, ok, err := h.owners.ClaimOwner(ctx, emailClaim, email.String())
	if err != nil {
		return loaded[user]{}, err
	}
	if !ok {
		h.hasher.VerifyDummy(cmd.Password)
		return loaded[user]{}, errBadCredentials
	}
	u, err := load(ctx, h.store, users, id)
	if err != nil {
		return u, err
	}
	if !u.state.exists() {
		h.hasher.VerifyDummy(cmd.Password)
		return u, errBadCredentials
	}
	match, err := h.hasher.Verify(cmd.Password, u.state.PasswordHash)
	if err != nil {
		return u, fmt.Errorf("verify password: %w", err)
	}
	if !match {
		return u, errBadCredentials
	}
	return u, nil
}
