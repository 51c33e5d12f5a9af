package handlers

import (
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// user is the user aggregate's state. Its fields are exported only for snapshots.
type user struct {
	ID           uuid.UUID `json:"id"`
	Email        string    `json:"email"`
	DisplayName  string    `json:"display_name"`
	AvatarURL    string    `json:"avatar_url"`
	Role         string    `json:"role"`
	PasswordHash string    `json:"password_hash"`
	CreatedAt    time.Time `json:"created_at"`
	LoginCount   int64     `json:"login_count"`
}

func (u user) exists() bool { return u.ID != uuid.Nil }

func (u user) view() queries.User {
	v := queries.User{
		UserSummary: queries.UserSummary{ID: u.ID, Email: u.Email, DisplayName: u.DisplayName, Role: u.Role, CreatedAt: u.CreatedAt},
		LoginCount:  u.LoginCount,
	}
	if u.AvatarURL != "" {
		a := u.AvatarURL
		v.AvatarURL = &a
	}
	return v
}

// emailClaim is the unique-claim kind that makes one email one account.
const emailClaim = "user.email"

var users = aggregate[user]{
	streamType:    events.StreamUser,
	evolve:        evolveUser,
	snapshotEvery: 100,
	stateVersion:  1,
}

func evolveUser(u user, e events.Envelope) user {
	switch ev := e.Data.(type) {
	case events.UserRegistered:
		u = user{
			ID: ev.UserID, Email: ev.Email, DisplayName: ev.DisplayName, Role: ev.Role,
			PasswordHash: ev.PasswordHash, CreatedAt: ev.RegisteredAt,
		}
	case events.UserProfileUpdated:
		if ev.DisplayName != nil {
			u.DisplayName = *ev.DisplayName
		}
		if ev.AvatarURL != nil {
			u.AvatarURL = *ev.AvatarURL
		}
	case events.UserPasswordChanged:
		u.PasswordHash = ev.PasswordHash
	case events.UserRoleChanged:
		u.Role = ev.Role
	case events.UserLoggedIn:
		u.LoginCount++
	}
	return u
}

var notFoundUser = commands.NotFound("user")
