package handlers

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"taki/queries"
)

// UsersReadModel is what the users projection serves.
type UsersReadModel interface {
	Profile(ctx context.Context, id uuid.UUID) (queries.User, bool, error)
	Search(ctx context.Context, prefix string, after *queries.UserCursor, limit int) ([]queries.PublicUser, *queries.UserCursor, error)
}

// UserQueries answers the user queries from the users read model.
type UserQueries struct{ rm UsersReadModel }

// NewUserQueries refuses a nil read model.
func NewUserQueries(rm UsersReadModel) (*UserQueries, error) {
	if rm == nil {
		return nil, errors.New("new user queries: nil read model")
	}
	return &UserQueries{rm: rm}, nil
}

// GetProfileHandler answers GetProfile.
type GetProfileHandler struct{ *UserQueries }

// Handle implements bus.QueryHandler.
func (h GetProfileHandler) Handle(ctx context.Context, q queries.GetProfile) (queries.User, error) {
	u, ok, err := h.rm.Profile(ctx, q.UserID)
	if err != nil {
		return u, err
	}
	if !ok {
		return u, notFoundUser
	}
	return u, nil
}

// GetUserHandler answers GetUser.
type GetUserHandler struct{ *UserQueries }

// Handle implements bus.QueryHandler.
func (h GetUserHandler) Handle(ctx context.Context, q queries.GetUser) (queries.PublicUser, error) {
	u, ok, err := h.rm.Profile(ctx, q.UserID)
	if err != nil {
		return queries.PublicUser{}, err
	}
	if !ok {
		return queries.PublicUser{}, notFoundUser
	}
	return queries.PublicUser{ID: u.ID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL}, nil
}

// SearchUsersHandler answers SearchUsers.
type SearchUsersHandler struct{ *UserQueries }

// Handle implements bus.QueryHandler.
func (h SearchUsersHandler) Handle(ctx context.Context, q queries.SearchUsers) (queries.Page[queries.PublicUser], error) {
	limit := q.Limit
	if limit == 0 {
		limit = queries.DefaultLimit
	}
	var after *queries.UserCursor
	if q.Cursor != "" {
		after = &queries.UserCursor{}
		if err := queries.DecodeCursor(q.Cursor, after); err != nil {
			return queries.Page[queries.PublicUser]{}, q.Validate()
		}
	}
	items, next, err := h.rm.Search(ctx, q.Prefix, after, limit)
	if err != nil {
		return queries.Page[queries.PublicUser]{}, err
	}
	page := queries.Page[queries.PublicUser]{Items: items}
	if next != nil {
		page.NextCursor = queries.EncodeCursor(next)
	}
	return page, nil
}
