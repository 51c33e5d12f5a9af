package handlers

import (
	"context"
	"errors"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// UpdateProfileHandler changes a user's display name and avatar. It answers the profile from the
// aggregate it just wrote, so the caller needs no read-model round trip.
type UpdateProfileHandler struct {
	store *Store
}

// NewUpdateProfileHandler refuses a nil store.
func NewUpdateProfileHandler(store *Store) (*UpdateProfileHandler, error) {
	if store == nil {
		return nil, errors.New("new update profile handler: nil store")
	}
	return &UpdateProfileHandler{store: store}, nil
}

// Handle implements bus.CommandHandler.
func (h *UpdateProfileHandler) Handle(ctx context.Context, cmd commands.UpdateProfile) (queries.User, error) {
	u, err := load(ctx, h.store, users, cmd.Actor)
	if err != nil {
		return queries.User{}, err
	}
	if !u.state.exists() {
		return queries.User{}, commands.Unauthenticated("the acting user does not exist")
	}
	ev := events.UserProfileUpdated{UserID: u.id}
	if cmd.DisplayName != nil {
		name, err := commands.NewDisplayName(*cmd.DisplayName)
		if err != nil {
			return queries.User{}, cmd.Validate()
		}
		if s := name.String(); s != u.state.DisplayName {
			ev.DisplayName = &s
		}
	}
	if cmd.AvatarURL != nil {
		avatar, err := commands.NewAvatarURL(*cmd.AvatarURL)
		if err != nil {
			return queries.User{}, cmd.Validate()
		}
		if s := avatar.String(); s != u.state.AvatarURL {
			ev.AvatarURL = &s
		}
	}
	if ev.DisplayName == nil && ev.AvatarURL == nil {
		return u.state.view(), nil // nothing changed: no event
	}
	next, err := save(ctx, h.store, users, u, nil, ev)
	if err != nil {
		return queries.User{}, err
	}
	return next.state.view(), nil
}
