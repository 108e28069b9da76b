package status

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/ops"
)

// WriteText writes the report as a table for people: one line per check,
// grouped by area, worst verdict first in the summary line.
func WriteText(w io.Writer, r Report) error {
	fmt.Fprintf(w, "tandem status at %s: %s", r.GeneratedAt.Format(time.RFC3339), strings.ToUpper(string(r.Verdict)))
	if r.Window > 0 {
		fmt.Fprintf(w, " (rates over %.1fs)", r.Window)
	}
	fmt.Fprintln(w)
	var reds []string
	for _, c := range r.Checks {
		if c.Verdict == Red {
			reds = append(reds, c.Name)
		}
	}
	if len(reds) > 0 {
		fmt.Fprintf(w, "red: %s\n", strings.Join(reds, ", "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	area := ""
	for _, c := range r.Checks {
		if c.Area != area {
			area = c.Area
			fmt.Fprintf(tw, "%s\t\t\t\t\t\n", strings.ToUpper(area))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", mark(c.Verdict), c.Name, c.Display, thresholdText(c), oneLine(c.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Partitions) > 0 {
		fmt.Fprintln(w, "\nPARTITIONS (offsets; lag in messages, -1 unknown)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "stream\tpartition\thigh water\tspeed lag\tarchive lag\tabsorbed\tunabsorbed\t")
		for _, p := range r.Partitions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Stream, p.Partition, p.HighWater, p.SpeedLag, p.ArchiveLag, p.Absorbed, p.Unabsorbed)
		}
		return tw.Flush()
	}
	return nil
}

func mark(v Verdict) string {
	switch v {
	case Red:
		return "RED"
	case Yellow:
		return "yellow"
	case Unknown:
		return "?"
	}
	return "ok"
}

func thresholdText(c Check) string {
	if c.Threshold == nil {
		return "-"
	}
	f := func(v float64) string {
		if math.IsInf(v, 1) {
			return "never"
		}
		return format(v, c.Unit)
	}
	return fmt.Sprintf("yellow ≥ %s, red ≥ %s", f(c.Threshold.Yellow), f(c.Threshold.Red))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Tokens, when set, are required as "Authorization: Bearer <token>"
	// (serve passes auth.query_tokens).
	Tokens []string
	// Registry receives tandem_auth_failures_total{endpoint="status"}.
	Registry prometheus.Registerer
	Log      *slog.Logger
}

// Handler serves GET /v1/status: the monitor's report as JSON, 200 even
// when red (the verdict is in the body; the request itself succeeded).
func Handler(m *Monitor, opts HandlerOptions) http.Handler {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	var failures *prometheus.CounterVec
	if opts.Registry != nil {
		// An unregistered counter still counts: the endpoint works, just
		// not exported.
		failures, _ = ops.AuthFailures(opts.Registry)
	}
	report := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := m.Gather(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err := json.NewEncoder(w).Encode(rep); err != nil {
			log.Warn("writing the status report", "err", err)
		}
	})
	return ops.NewBearer(opts.Tokens).Wrap("tandem", report, func(w http.ResponseWriter, r *http.Request) {
		if failures != nil {
			failures.WithLabelValues("status").Inc()
		}
		// Never the token itself: only that one was missing or wrong.
		log.Warn("refused a request without a valid token", "endpoint", "status", "remote", r.RemoteAddr,
			"token_present", r.Header.Get("Authorization") != "")
		writeJSONError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
	})
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
}
