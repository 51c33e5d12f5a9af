package commands

import (
	"errors"

	"github.com/google/uuid"
)

// RegisterUser creates an account. UserID is chosen by the caller (a UUIDv7) so the answer can name it.
type RegisterUser struct {
	UserID      uuid.UUID
	Email       string
	Password    string
	DisplayName string
}

// Validate implements bus.Validatable.
func (c RegisterUser) Validate() error {
	var f fields
	_, err := NewEmail(c.Email)
	f.check("email", err)
	_, err = NewPassword(c.Password)
	f.check("password", err)
	_, err = NewDisplayName(c.DisplayName)
	f.check("display_name", err)
	return Invalid(f)
}

// LogIn checks a user's credentials and records the login. Unknown email and wrong password fail alike.
type LogIn struct {
	Email    string
	Password string
}

// Validate implements bus.Validatable. Bad syntax is a failed login, not a validation error: the
// answer must not tell which part was wrong.
func (c LogIn) Validate() error { return nil }

// UpdateProfile changes the acting user's public profile; nil fields stay as they are.
type UpdateProfile struct {
	Actor       uuid.UUID
	DisplayName *string
	AvatarURL   *string
}

// Validate implements bus.Validatable.
func (c UpdateProfile) Validate() error {
	var f fields
	if c.DisplayName != nil {
		_, err := NewDisplayName(*c.DisplayName)
		f.check("display_name", err)
	}
	if c.AvatarURL != nil {
		_, err := NewAvatarURL(*c.AvatarURL)
		f.check("avatar_url", err)
	}
	if c.DisplayName == nil && c.AvatarURL == nil {
		f.check("display_name", errors.New("give display_name or avatar_url"))
	}
	return Invalid(f)
}

// ChangePassword replaces the acting user's password after checking the current one and ends the
// user's other sessions.
type ChangePassword struct {
	Actor           uuid.UUID
	CurrentPassword string
	NewPassword     string
	// KeepSession is the public id of the session the caller re-issues; every other one ends.
	KeepSession *uuid.UUID
}

// Validate implements bus.Validatable.
func (c ChangePassword) Validate() error {
	var f fields
	if c.CurrentPassword == "" {
		f.check("current_password", errors.New("is required"))
	}
	_, err := NewPassword(c.NewPassword)
	f.check("new_password", err)
	return Invalid(f)
}

// PromoteUser makes the user with Email an admin (operators run it from the CLI). The user's sessions end.
type PromoteUser struct {
	Email string
}

// Validate implements bus.Validatable.
func (c PromoteUser) Validate() error {
	var f fields
	_, err := NewEmail(c.Email)
	f.check("email", err)
	return Invalid(f)
}
