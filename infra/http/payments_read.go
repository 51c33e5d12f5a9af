package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"taki/queries"
)

// The payments read routes: the caller's payments and billing summary. Another user's payment, and an
// id that is not a UUID, are 404 alike.

func (a *api) listPayments(c *gin.Context) {
	limit, ok := queryLimit(c)
	if !ok {
		return
	}
	page, ok := ask[queries.Page[queries.Payment]](c, a.Bus, queries.ListPayments{Actor: session(c).UserID, Limit: limit, Cursor: c.Query("cursor")})
	if ok {
		c.JSON(http.StatusOK, page)
	}
}

func (a *api) getPayment(c *gin.Context) {
	id, ok := idParam(c, "id", "payment")
	if !ok {
		return
	}
	p, ok := ask[queries.Payment](c, a.Bus, queries.GetPayment{Actor: session(c).UserID, PaymentID: id})
	if ok {
		c.JSON(http.StatusOK, p)
	}
}

func (a *api) billingSummary(c *gin.Context) {
	s, ok := ask[queries.BillingSummary](c, a.Bus, queries.GetBillingSummary{Actor: session(c).UserID})
	if ok {
		c.JSON(http.StatusOK, s)
	}
}
