package commands

import (
	"testing"

	"github.com/google/uuid"
)

func TestRequestPaymentValidate(t *testing.T) {
	valid := RequestPayment{Actor: uuid.New(), PaymentID: uuid.New(), IdempotencyKey: "k-1", AmountMinor: 500,
		Currency: "USD", SourceID: "cnon:card-nonce-ok", Description: "tea"}
	cases := []struct {
		name string
		edit func(*RequestPayment)
		ok   bool
	}{
		{"valid", func(*RequestPayment) {}, true},
		{"another ISO 4217 code", func(c *RequestPayment) { c.Currency = "JPY" }, true},
		{"three letters that are no currency", func(c *RequestPayment) { c.Currency = "XXQ" }, false},
		{"lower case", func(c *RequestPayment) { c.Currency = "usd" }, false},
		{"source id with a NUL", func(c *RequestPayment) { c.SourceID = "cnon:x\x00y" }, false},
		{"source id with a line feed", func(c *RequestPayment) { c.SourceID = "cnon:x\ny" }, false},
		{"source id with non-ASCII letters", func(c *RequestPayment) { c.SourceID = "cnon:ünïcode" }, true},
	}
	for _, tc := range cases {
		c := valid
		tc.edit(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
