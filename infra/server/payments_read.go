package server

import (
	"taki/handlers"
	"taki/infra/bus"
	"taki/projections"
)

// registerPaymentQueries registers the payment and billing queries on b, answered from the payments
// read model.
func registerPaymentQueries(b *bus.Bus, rm *projections.Payments) error {
	qs, err := handlers.NewPaymentQueries(rm)
	if err != nil {
		return err
	}
	bus.RegisterQuery(b, handlers.GetPaymentHandler{PaymentQueries: qs})
	bus.RegisterQuery(b, handlers.ListPaymentsHandler{PaymentQueries: qs})
	bus.RegisterQuery(b, handlers.GetBillingSummaryHandler{PaymentQueries: qs})
	return nil
}
