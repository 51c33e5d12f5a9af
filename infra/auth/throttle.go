package auth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
)

// throttleLockClass is the first key of the two-key advisory locks that serialise one email's
// attempts. PostgreSQL keeps two-key locks apart from one-key (bigint) locks such as goose's and
// pgtest's, so only other two-key users of this class could collide.
const throttleLockClass int32 = 0x74616b69 // "taki"

// ThrottleConfig configures a Throttle. Zero fields get the defaults of API.md.
type ThrottleConfig struct {
	// MaxFailures is how many failed logins an email may have inside Window (default 5).
	MaxFailures int
	// Window is how long a failure counts (default 15 min).
	Window time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *ThrottleConfig) setDefaults() {
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.Window == 0 {
		c.Window = 15 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c ThrottleConfig) validate() error {
	var errs []error
	if c.MaxFailures < 1 {
		errs = append(errs, fmt.Errorf("failures allowed must be at least 1 (MaxFailures %d)", c.MaxFailures))
	}
	if c.Window < time.Second {
		errs = append(errs, fmt.Errorf("window must be at least 1s (Window %s)", c.Window))
	}
	return errors.Join(errs...)
}

// Throttle limits login attempts per email (trimmed, lower-cased), whether or not an account has that
// email, so that its answers reveal nothing about which emails are registered.
//
// Check admits an attempt by counting it as a failure in advance; Fail confirms that failure and
// Succeed forgives all of them. Counting at admission is what holds under concurrency: twenty attempts
// racing for the same email cannot all pass a check that only looks at failures already recorded, as
// they would all be verifying passwords before any of them had failed. An admitted attempt whose
// outcome is never reported (a crash, a database error) keeps counting as a failure until it leaves
// the window.
type Throttle struct {
	pool *pgxpool.Pool
	cfg  ThrottleConfig
	// lastPrune (unix nanoseconds of the injected clock) spaces out the table-wide pruning.
	lastPrune atomic.Int64
}

// NewThrottle returns a Throttle keeping its counts in pool's database (the login_failures table).
func NewThrottle(pool *pgxpool.Pool, cfg ThrottleConfig) (*Throttle, error) {
	if pool == nil {
		return nil, errors.New("login throttle: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("login throttle config: %w", err)
	}
	return &Throttle{pool: pool, cfg: cfg}, nil
}

// Check admits one login attempt for email, or refuses it with a *commands.Error of kind
// commands.KindRateLimited whose RetryAfter (whole seconds, at least one) is when the oldest failure
// that fills the window leaves it. Every admitted attempt must be followed by Fail or Succeed.
func (t *Throttle) Check(ctx context.Context, email string) error {
	key := emailKey(email)
	now := t.now()
	since := now.Add(-t.cfg.Window)
	if err := t.maybePruneAll(ctx, now, since); err != nil {
		return err
	}
	var (
		limited   bool
		freeAgain time.Time
	)
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if err := lockEmail(ctx, tx, key); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE email_hash = $1 AND failed_at <= $2`, key, since); err != nil {
			return fmt.Errorf("prune login failures: %w", err)
		}
		// The MaxFailures-th newest failure is the one whose leaving the window frees a slot.
		var nth time.Time
		err := tx.QueryRow(ctx, `
			SELECT failed_at FROM login_failures
			WHERE email_hash = $1 AND failed_at > $2
			ORDER BY failed_at DESC
			OFFSET $3 LIMIT 1`, key, since, t.cfg.MaxFailures-1).Scan(&nth)
		if err == nil {
			limited, freeAgain = true, nth.Add(t.cfg.Window)
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("count login failures: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO login_failures (email_hash, failed_at) VALUES ($1, $2)`, key, now); err != nil {
			return fmt.Errorf("record login attempt: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check login throttle: %w", err)
	}
	if !limited {
		return nil
	}
	return &commands.Error{
		Kind:       commands.KindRateLimited,
		Detail:     "too many failed logins; try again later",
		RetryAfter: ceilSecond(freeAgain.Sub(now)),
	}
}

// Fail records a failed login for email: it settles the attempt Check admitted, or, when there is none,
// records a failure of its own, so that a failure counts once either way.
func (t *Throttle) Fail(ctx context.Context, email string) error {
	key := emailKey(email)
	now := t.now()
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if err := lockEmail(ctx, tx, key); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			UPDATE login_failures SET settled = true
			WHERE id = (
				SELECT id FROM login_failures
				WHERE email_hash = $1 AND NOT settled AND failed_at > $2
				ORDER BY failed_at, id
				LIMIT 1
			)`, key, now.Add(-t.cfg.Window))
		if err != nil {
			return fmt.Errorf("settle login attempt: %w", err)
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO login_failures (email_hash, failed_at, settled) VALUES ($1, $2, true)`, key, now); err != nil {
			return fmt.Errorf("record login failure: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("login throttle fail: %w", err)
	}
	return nil
}

// Succeed clears email's failures after a successful login.
func (t *Throttle) Succeed(ctx context.Context, email string) error {
	if _, err := t.pool.Exec(ctx, `DELETE FROM login_failures WHERE email_hash = $1`, emailKey(email)); err != nil {
		return fmt.Errorf("login throttle succeed: %w", err)
	}
	return nil
}

// maybePruneAll deletes every email's failures older than the window, at most once per pruneInterval:
// rows of emails nobody tries again are otherwise never deleted.
func (t *Throttle) maybePruneAll(ctx context.Context, now, since time.Time) error {
	last := t.lastPrune.Load()
	if now.UnixNano()-last < int64(pruneInterval) || !t.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return nil
	}
	if _, err := t.pool.Exec(ctx, `DELETE FROM login_failures WHERE failed_at <= $1`, since); err != nil {
		return fmt.Errorf("prune login failures: %w", err)
	}
	return nil
}

func (t *Throttle) now() time.Time { return t.cfg.Now().UTC().Truncate(time.Microsecond) }

// lockEmail serialises the transactions of one email until they end; other emails do not wait (but for
// the rare 32-bit hash collision, which only costs a wait).
func lockEmail(ctx context.Context, tx pgx.Tx, key []byte) error {
	k := int32(binary.BigEndian.Uint32(key[:4]))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`, throttleLockClass, k); err != nil {
		return fmt.Errorf("lock login throttle: %w", err)
	}
	return nil
}

// emailKey is the SHA-256 of the normalised email: a fixed-size key however long the input.
func emailKey(email string) []byte {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return sum[:]
}

func ceilSecond(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1) / time.Second * time.Second
}
