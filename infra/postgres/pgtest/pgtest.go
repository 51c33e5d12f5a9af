// Package pgtest gives tests a real PostgreSQL database of their own, copied from a migrated template, so
// test packages run in parallel and leave nothing behind. It never mocks the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/infra/postgres"
	"taki/migrations"
)

// AdminURL is the server the test databases live on; TAKI_TEST_DATABASE_URL overrides it.
func AdminURL() string {
	if v := os.Getenv("TAKI_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// lockKey serialises template creation and copying across concurrently running test binaries.
const lockKey = 7_340_221_117

// Run creates a database for one test package, stores its URL in *databaseURL, runs the tests and drops
// the database. Use it from TestMain: os.Exit(pgtest.Run(m, &dbURL)).
func Run(m *testing.M, databaseURL *string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	name, dbURL, err := create(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	*databaseURL = dbURL
	code := m.Run()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := drop(ctx, name); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	return code
}

// NewDatabase creates a fresh migrated database for one test and drops it when the test ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name, dbURL, err := create(ctx)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drop(ctx, name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return dbURL
}

// NewPool connects to databaseURL and closes the pool when the test ends.
func NewPool(tb testing.TB, databaseURL string) *pgxpool.Pool {
	tb.Helper()
	pool, err := postgres.Connect(context.Background(), databaseURL, 0)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func create(ctx context.Context) (name, dbURL string, err error) {
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", "", fmt.Errorf("connect to test server (is PostgreSQL running?): %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return "", "", fmt.Errorf("lock: %w", err)
	}
	defer func() { _, _ = admin.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) }()

	tmpl, err := templateName()
	if err != nil {
		return "", "", err
	}
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&exists); err != nil {
		return "", "", fmt.Errorf("look up template: %w", err)
	}
	if !exists {
		if err := buildTemplate(ctx, admin, tmpl); err != nil {
			return "", "", err
		}
	}
	name = "taki_test_" + randomSuffix()
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, tmpl)); err != nil {
		return "", "", fmt.Errorf("create %s from template: %w", name, err)
	}
	return name, withDatabase(AdminURL(), name), nil
}

func buildTemplate(ctx context.Context, admin *pgx.Conn, tmpl string) error {
	// Templates of older migration sets are dead weight; nobody copies them any more.
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'taki_tmpl_%'`)
	if err != nil {
		return fmt.Errorf("list old templates: %w", err)
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list old templates: %w", err)
	}
	for _, o := range old {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, o))
	}
	building := tmpl + "_building"
	_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, building))
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, building)); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	pool, err := postgres.Connect(ctx, withDatabase(AdminURL(), building), 2)
	if err != nil {
		return err
	}
	err = postgres.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	// Renaming last makes a half-built template invisible to other test binaries.
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, building, tmpl)); err != nil {
		return fmt.Errorf("publish template: %w", err)
	}
	return nil
}

func drop(ctx context.Context, name string) error {
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return fmt.Errorf("connect to drop %s: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	return nil
}

// templateName changes whenever a migration changes, so tests never run on a stale schema.
func templateName() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return "taki_tmpl_" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + name
	return u.String()
}

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}
