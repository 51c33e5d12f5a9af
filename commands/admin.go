package commands

import "errors"

// ReplayProjection rebuilds a projection's read model from the log: its tables are emptied and its
// offset reset under its consumer group's lock, then it catches up.
type ReplayProjection struct {
	Name string
}

// Validate implements bus.Validatable.
func (c ReplayProjection) Validate() error {
	var f fields
	if c.Name == "" || len(c.Name) > 100 {
		f.check("name", errors.New("must name a projection"))
	}
	return Invalid(f)
}
