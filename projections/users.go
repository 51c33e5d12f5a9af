// Package projections builds Taki's read models from the event log: each projection owns its tables,
// turns an event into SQL writes (Apply) and answers the queries of its read model.
package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/queries"
)

// Users is the users projection: profiles, the directory and login counts.
type Users struct {
	pool *pgxpool.Pool
}

// NewUsers returns the users projection on pool.
func NewUsers(pool *pgxpool.Pool) (*Users, error) {
	if pool == nil {
		return nil, errors.New("new users projection: nil pool")
	}
	return &Users{pool: pool}, nil
}

// Name implements postgres.Projection.
func (*Users) Name() string { return queries.UsersReadModel }

// Tables implements postgres.Projection.
func (*Users) Tables() []string { return []string{"user_profiles"} }

// Apply implements postgres.Projection.
func (*Users) Apply(b *pgx.Batch, e events.Envelope) error {
	switch ev := e.Data.(type) {
	case events.UserRegistered:
		b.Queue(`INSERT INTO user_profiles (id, email, display_name, name_key, role, created_at)
			VALUES ($1, $2, $3, lower($3), $4, $5) ON CONFLICT (id) DO NOTHING`,
			ev.UserID, ev.Email, ev.DisplayName, ev.Role, ev.RegisteredAt)
	case events.UserProfileUpdated:
		b.Queue(`UPDATE user_profiles SET
				display_name = COALESCE($2, display_name),
				name_key = lower(COALESCE($2, display_name)),
				avatar_url = CASE WHEN $3::text IS NULL THEN avatar_url ELSE NULLIF($3, '') END
			WHERE id = $1`, ev.UserID, ev.DisplayName, ev.AvatarURL)
	case events.UserRoleChanged:
		b.Queue(`UPDATE user_profiles SET role = $2 WHERE id = $1`, ev.UserID, ev.Role)
	case events.UserLoggedIn:
		b.Queue(`UPDATE user_profiles SET login_count = login_count + 1 WHERE id = $1`, ev.UserID)
	}
	return nil
}

// Profile reads one user's profile.
func (u *Users) Profile(ctx context.Context, id uuid.UUID) (queries.User, bool, error) {
	var p queries.User
	err := u.pool.QueryRow(ctx, `SELECT id, email, display_name, avatar_url, role, created_at, login_count
		FROM user_profiles WHERE id = $1`, id).
		Scan(&p.ID, &p.Email, &p.DisplayName, &p.AvatarURL, &p.Role, &p.CreatedAt, &p.LoginCount)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("read profile %s: %w", id, err)
	}
	return p, true, nil
}

// Search lists users whose lower-cased display name starts with lower(prefix), keyset-paged on
// (name_key, id): page 10,000 costs what page 1 costs.
func (u *Users) Search(ctx context.Context, prefix string, after *queries.UserCursor, limit int) ([]queries.PublicUser, *queries.UserCursor, error) {
	pattern := likeEscape(prefix) + "%"
	afterName, afterID := "", uuid.Nil
	if after != nil {
		afterName, afterID = after.Name, after.ID
	}
	rows, err := u.pool.Query(ctx, `SELECT id, display_name, avatar_url, name_key FROM user_profiles
		WHERE name_key LIKE lower($1) COLLATE "C" AND (name_key, id) > ($2::text COLLATE "C", $3)
		ORDER BY name_key, id LIMIT $4`, pattern, afterName, afterID, limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("search users: %w", err)
	}
	defer rows.Close()
	out := make([]queries.PublicUser, 0, limit)
	var keys []string
	for rows.Next() {
		var p queries.PublicUser
		var key string
		if err := rows.Scan(&p.ID, &p.DisplayName, &p.AvatarURL, &key); err != nil {
			return nil, nil, fmt.Errorf("search users: %w", err)
		}
		out = append(out, p)
		keys = append(keys, key)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("search users: %w", err)
	}
	if len(out) <= limit {
		return out, nil, nil
	}
	out = out[:limit]
	return out, &queries.UserCursor{Name: keys[limit-1], ID: out[limit-1].ID}, nil
}

// likeEscape makes s match literally inside a LIKE pattern.
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
