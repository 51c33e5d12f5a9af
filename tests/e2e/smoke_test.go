package e2e

import (
	"net/http"
	"testing"

	"taki/tests/testserver"
)

func TestRegisterLogInReadMe(t *testing.T) {
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	c.Register("smoke@example.com", "correct horse", "Smoke")
	c.LogIn("smoke@example.com", "correct horse")
	r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("me: %d %s", r.StatusCode, r.Body)
	}
	var me struct {
		Email      string `json:"email"`
		LoginCount int    `json:"login_count"`
	}
	r.JSON(t, &me)
	if me.Email != "smoke@example.com" || me.LoginCount != 1 {
		t.Fatalf("me = %+v", me)
	}
}
