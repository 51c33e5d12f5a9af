package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"taki/infra/logging"
	"taki/infra/payments"
)

// newSandboxCmd runs the payments sandbox alone: Square's Payments API shape on one address, in
// memory, with latency and failure injection. It needs no database and no TAKI_SECRET.
func newSandboxCmd(env *environment) *cobra.Command {
	var (
		addr, webhookURL, signatureKey, accessToken, failMode string
		latency, pendingDelay, refundDelay, retryAfter        time.Duration
		failRatio                                             float64
		failNext                                              int
	)
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run the payments sandbox (Square's Payments API on loopback) until SIGINT/SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromEnv := func(dst *string, flag, name string) {
				if !cmd.Flags().Changed(flag) {
					if v := os.Getenv(name); v != "" {
						*dst = v
					}
				}
			}
			fromEnv(&addr, "addr", "TAKI_SANDBOX_ADDR")
			fromEnv(&webhookURL, "webhook-url", "TAKI_SQUARE_WEBHOOK_URL")
			fromEnv(&signatureKey, "signature-key", "TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY")
			fromEnv(&accessToken, "access-token", "TAKI_SQUARE_ACCESS_TOKEN")
			logger, err := sandboxLogger(env)
			if err != nil {
				return err
			}
			mode, err := payments.ParseFailure(failMode)
			if err != nil {
				return fmt.Errorf("--fail-mode: %w", err)
			}
			if failRatio < 0 || failRatio > 1 {
				return fmt.Errorf("--fail-ratio %v is not between 0 and 1", failRatio)
			}
			if (failRatio > 0 || failNext > 0) && mode == payments.FailNone {
				return fmt.Errorf("--fail-ratio and --fail-next need a --fail-mode")
			}
			sb, err := payments.NewSandbox(payments.SandboxConfig{
				AccessToken: accessToken, PendingDelay: pendingDelay, RefundDelay: refundDelay,
				WebhookURL: webhookURL, SignatureKey: signatureKey, Latency: latency, RetryAfter: retryAfter,
			}, logger)
			if err != nil {
				return err
			}
			sb.FailNext(failNext, mode)
			sb.SetFailureRatio(failRatio, mode)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				sb.Close()
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			logger.Info("payments sandbox listening", "addr", ln.Addr().String(), "webhook_url", webhookURL)
			fmt.Fprintf(cmd.OutOrStdout(), "payments sandbox on http://%s\n", ln.Addr())
			return sb.Serve(cmd.Context(), ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8081", "address to serve on (TAKI_SANDBOX_ADDR)")
	f.StringVar(&webhookURL, "webhook-url", "", "URL that receives the signed webhooks (TAKI_SQUARE_WEBHOOK_URL); empty sends none")
	f.StringVar(&signatureKey, "signature-key", "", "webhook signature key (TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY)")
	f.StringVar(&accessToken, "access-token", "", "Bearer token to require (TAKI_SQUARE_ACCESS_TOKEN); empty accepts any")
	f.DurationVar(&latency, "latency", 0, "delay added before every answer")
	f.DurationVar(&pendingDelay, "pending-delay", 500*time.Millisecond, "how long cnon:card-nonce-pending stays PENDING")
	f.DurationVar(&refundDelay, "refund-delay", 0, "how long a refund stays PENDING (0: completes at once)")
	f.DurationVar(&retryAfter, "retry-after", 0, "Retry-After of injected 429 and 503 answers")
	f.StringVar(&failMode, "fail-mode", "none", "injected failure: 500, 503, 429, drop, drop-after or none")
	f.Float64Var(&failRatio, "fail-ratio", 0, "share of requests (0 to 1) answered with --fail-mode")
	f.IntVar(&failNext, "fail-next", 0, "answer the first N requests with --fail-mode")
	return cmd
}

// sandboxLogger logs as configured by --log-level/--log-format or TAKI_LOG_LEVEL/TAKI_LOG_FORMAT,
// without the rest of the configuration (the sandbox needs no database or secret).
func sandboxLogger(env *environment) (*slog.Logger, error) {
	level, format := env.logLevel, env.logFormat
	if level == "" {
		level = os.Getenv("TAKI_LOG_LEVEL")
	}
	if format == "" {
		format = os.Getenv("TAKI_LOG_FORMAT")
	}
	var lv slog.Level
	if level != "" {
		if err := lv.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("log level %q is not debug, info, warn or error", level)
		}
	}
	switch format {
	case "":
		format = "json"
	case "json", "text":
	default:
		return nil, fmt.Errorf("log format %q is not json or text", format)
	}
	return logging.New(os.Stderr, format, lv), nil
}
