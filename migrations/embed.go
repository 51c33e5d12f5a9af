// Package migrations holds the versioned SQL schema, embedded into the binary and applied by goose.
package migrations

import "embed"

// FS holds every migration file; goose reads them in version order.
//
//go:embed *.sql
var FS embed.FS
