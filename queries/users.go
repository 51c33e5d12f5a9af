package queries

import (
	"time"

	"github.com/google/uuid"

	"taki/commands"
)

// UsersReadModel is the projection that serves user queries.
const UsersReadModel = "users"

// UserSummary is API.md's `user` object, as registration and session answers show it.
type UserSummary struct {
	ID          uuid.UUID `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	AvatarURL   *string   `json:"avatar_url"`
	Role        string    `json:"role"`
	CreatedAt   time.Time `json:"created_at"`
}

// User is a user as its owner sees it (GET /users/me).
type User struct {
	UserSummary
	LoginCount int64 `json:"login_count"`
}

// PublicUser is a user as others see it (directory, GET /users/{id}).
type PublicUser struct {
	ID          uuid.UUID `json:"id"`
	DisplayName string    `json:"display_name"`
	AvatarURL   *string   `json:"avatar_url"`
}

// GetProfile answers the acting user's own profile.
type GetProfile struct {
	UserID uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetProfile) ReadModel() string { return UsersReadModel }

// GetUser answers another user's public profile.
type GetUser struct {
	UserID uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetUser) ReadModel() string { return UsersReadModel }

// SearchUsers lists users whose display name starts with Prefix (case-insensitive), by name then id.
type SearchUsers struct {
	Prefix string
	Limit  int
	Cursor string
}

// ReadModel implements bus.ReadModelQuery.
func (SearchUsers) ReadModel() string { return UsersReadModel }

// Validate implements bus.Validatable.
func (q SearchUsers) Validate() error {
	var f []commands.FieldError
	// Names hold no control characters (DisplayName), so a prefix with one matches nothing; NUL or
	// invalid UTF-8 would fail the query itself.
	if err := commands.CheckPlainText(q.Prefix); err != nil {
		f = append(f, commands.FieldError{Field: "q", Message: err.Error()})
	} else if len([]rune(q.Prefix)) > 64 {
		f = append(f, commands.FieldError{Field: "q", Message: "must be at most 64 characters"})
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		f = append(f, commands.FieldError{Field: "limit", Message: "must be between 1 and 200"})
	}
	if q.Cursor != "" {
		var c UserCursor
		if err := DecodeCursor(q.Cursor, &c); err != nil {
			f = append(f, commands.FieldError{Field: "cursor", Message: err.Error()})
		} else if commands.CheckPlainText(c.Name) != nil {
			f = append(f, commands.FieldError{Field: "cursor", Message: "is not a cursor this API issued"})
		}
	}
	return commands.Invalid(f)
}

// UserCursor is the keyset position of the directory: the lower-cased name and the id after it.
type UserCursor struct {
	Name string    `json:"n"`
	ID   uuid.UUID `json:"i"`
}
