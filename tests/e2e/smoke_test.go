package e2e

import (
	"net/http"
	"testing"

	"taki/tests/testserver"
)

func TestRegisterLogInReadMe(t *testing.T) {
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	email := acctEmail(t) // not a fixed one: the package's database outlives a run of -count=2
	c.Register(email, "correct horse", "Smoke")
	c.LogIn(email, "correct horse")
	r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("me: %d %s", r.StatusCode, r.Body)
	}
	var me struct {
		Email      string `json:"email"`
		LoginCount int    `json:"login_count"`
	}
	r.JSON(t, &me)
	if me.Email != email || me.LoginCount != 1 {
		t.Fatalf("me = %+v", me)
	}
}
