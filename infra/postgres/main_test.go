package postgres_test

import (
	"os"
	"testing"

	"taki/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, &dbURL)) }
