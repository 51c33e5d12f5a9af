// Package e2e tests Taki end to end: a real server on loopback, its real router, real PostgreSQL.
package e2e

import (
	"os"
	"testing"

	"taki/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, &dbURL)) }
