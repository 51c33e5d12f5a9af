package events

import (
	"time"

	"github.com/google/uuid"
)

// Stream type of user aggregates.
const StreamUser = "user"

// UserRegistered starts a user's stream.
type UserRegistered struct {
	UserID       uuid.UUID `json:"user_id"`
	Email        string    `json:"email"`
	DisplayName  string    `json:"display_name"`
	PasswordHash string    `json:"password_hash"`
	Role         string    `json:"role"`
	RegisteredAt time.Time `json:"registered_at"`
}

// EventType implements Event.
func (UserRegistered) EventType() string { return "user.registered" }

// UserProfileUpdated carries only the fields that changed; nil means unchanged.
type UserProfileUpdated struct {
	UserID      uuid.UUID `json:"user_id"`
	DisplayName *string   `json:"display_name,omitempty"`
	AvatarURL   *string   `json:"avatar_url,omitempty"`
}

// EventType implements Event.
func (UserProfileUpdated) EventType() string { return "user.profile_updated" }

// UserPasswordChanged records a new password hash.
type UserPasswordChanged struct {
	UserID       uuid.UUID `json:"user_id"`
	PasswordHash string    `json:"password_hash"`
}

// EventType implements Event.
func (UserPasswordChanged) EventType() string { return "user.password_changed" }

// UserRoleChanged records a promotion (or demotion).
type UserRoleChanged struct {
	UserID uuid.UUID `json:"user_id"`
	Role   string    `json:"role"`
}

// EventType implements Event.
func (UserRoleChanged) EventType() string { return "user.role_changed" }

// UserLoggedIn records a successful login (the users read model counts them).
type UserLoggedIn struct {
	UserID uuid.UUID `json:"user_id"`
	At     time.Time `json:"at"`
}

// EventType implements Event.
func (UserLoggedIn) EventType() string { return "user.logged_in" }

func registerUsers(r *Registry) {
	register[UserRegistered](r, 1)
	register[UserProfileUpdated](r, 1)
	register[UserPasswordChanged](r, 1)
	register[UserRoleChanged](r, 1)
	register[UserLoggedIn](r, 1)
}
