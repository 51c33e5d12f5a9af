package commands

import (
	"errors"
	"net/mail"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Email is a syntactically valid address, lower-cased so that one address is one account.
type Email struct{ v string }

// NewEmail validates s as a bare address (no display name) of at most 254 bytes.
func NewEmail(s string) (Email, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Email{}, errors.New("is required")
	}
	if len(s) > 254 {
		return Email{}, errors.New("must be at most 254 characters")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return Email{}, errors.New("is not a valid email address")
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || !strings.Contains(s[at+1:], ".") || strings.HasSuffix(s, ".") {
		return Email{}, errors.New("is not a valid email address")
	}
	return Email{strings.ToLower(s)}, nil
}

func (e Email) String() string { return e.v }

// Password is a candidate password of 8 to 128 characters. It is never logged or stored, only hashed.
type Password struct{ v string }

// NewPassword validates length in characters (not bytes), so non-Latin passwords are not penalised.
func NewPassword(s string) (Password, error) {
	if !utf8.ValidString(s) {
		return Password{}, errors.New("must be valid UTF-8")
	}
	n := utf8.RuneCountInString(s)
	if n < 8 {
		return Password{}, errors.New("must be at least 8 characters")
	}
	if n > 128 {
		return Password{}, errors.New("must be at most 128 characters")
	}
	return Password{s}, nil
}

// Reveal returns the password for hashing; nothing else should call it.
func (p Password) Reveal() string { return p.v }

// String hides the password from accidental formatting into logs.
func (p Password) String() string { return "[redacted]" }

// DisplayName is a user's public name: 1 to 64 characters, trimmed, with no control characters.
type DisplayName struct{ v string }

// NewDisplayName validates and trims s.
func NewDisplayName(s string) (DisplayName, error) {
	s = strings.TrimSpace(s)
	if err := CheckPlainText(s); err != nil {
		return DisplayName{}, err
	}
	n := utf8.RuneCountInString(s)
	if n < 1 {
		return DisplayName{}, errors.New("must not be empty")
	}
	if n > 64 {
		return DisplayName{}, errors.New("must be at most 64 characters")
	}
	return DisplayName{s}, nil
}

// CheckPlainText is the rule for a single line of text a user gives (a name, a title, a search
// prefix): valid UTF-8 with no control characters. NUL among them, which PostgreSQL refuses in text.
func CheckPlainText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("must be valid UTF-8")
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return errors.New("must not contain control characters")
	}
	return nil
}

func (d DisplayName) String() string { return d.v }

// AvatarURL is an absolute http(s) URL of at most 2048 bytes, or empty to remove the avatar.
type AvatarURL struct{ v string }

// NewAvatarURL validates s.
func NewAvatarURL(s string) (AvatarURL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return AvatarURL{}, nil
	}
	if len(s) > 2048 {
		return AvatarURL{}, errors.New("must be at most 2048 characters")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return AvatarURL{}, errors.New("must be an absolute http or https URL")
	}
	return AvatarURL{s}, nil
}

func (a AvatarURL) String() string { return a.v }

// Role is a user's authority: member or admin.
type Role string

// Roles.
const (
	RoleMember Role = "member"
	RoleAdmin  Role = "admin"
)

// fields collects field errors while validating a command.
type fields []FieldError

func (f *fields) check(name string, err error) {
	if err != nil {
		*f = append(*f, FieldError{Field: name, Message: err.Error()})
	}
}
