package handlers

import (
	"context"

	"github.com/google/uuid"
)

// PasswordHasher hashes and checks passwords (argon2id in production).
type PasswordHasher interface {
	Hash(password string) (string, error)
	Verify(password, encodedHash string) (bool, error)
	// VerifyDummy spends the time of a real check, so an unknown email answers as slowly as a known one.
	VerifyDummy(password string)
}

// ClaimOwners finds the stream that claimed a unique value (the user of an email address).
type ClaimOwners interface {
	ClaimOwner(ctx context.Context, kind, value string) (uuid.UUID, bool, error)
}

// LoginThrottle limits failed logins per email.
type LoginThrottle interface {
	Check(ctx context.Context, email string) error
	Fail(ctx context.Context, email string) error
	Succeed(ctx context.Context, email string) error
}

// SessionRevoker ends a user's server-side sessions (after a role or password change).
type SessionRevoker interface {
	RevokeAllForUser(ctx context.Context, userID uuid.UUID, exceptPublicID *uuid.UUID) (int, error)
}

// StreamDirectory tells which of many ids have a stream of a type, in one look-up: a group created
// with a thousand members must not load a thousand user aggregates one round trip at a time.
type StreamDirectory interface {
	ExistingStreams(ctx context.Context, streamType string, ids []uuid.UUID) (map[uuid.UUID]bool, error)
}
