// Package crash kills a real `taki serve` process with SIGKILL under a write load, again and again, and
// then checks that every command it acknowledged left its events in the log exactly once and that every
// projection equals a fresh replay (DESIGN.md, "Reliability and security").
package crash

import (
	"os"
	"testing"

	"taki/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, &dbURL)) }
