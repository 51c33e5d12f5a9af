package projections

import (
	"os"
	"testing"

	"taki/infra/postgres/pgtest"
)

// dbURL is this package's test database, migrated from the template.
var dbURL string

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, &dbURL)) }
