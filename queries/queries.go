// Package queries holds the query types clients ask through the bus and the result types they answer.
package queries

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// Page is one page of a keyset-paginated list. NextCursor is nil on the last page.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// Limits of list pages (API.md: default 50, max 200).
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// EncodeCursor makes an opaque cursor of a keyset position.
func EncodeCursor(v any) *string {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

// ErrBadCursor means a cursor was not made by EncodeCursor for this list.
var ErrBadCursor = errors.New("is not a cursor of this list")

// DecodeCursor reads a cursor made by EncodeCursor into dst.
func DecodeCursor(s string, dst any) error {
	if len(s) > 1024 {
		return ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return ErrBadCursor
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return ErrBadCursor
	}
	return nil
}
