package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// `herald serve` runs the alert engine: the self-signed development
// certificate expires within the (raised) cert_expiry threshold, so that
// rule fires at the first evaluation; the notification is mailed through
// the queue to alerts.email at a remote MX and posted to the webhook, and
// /metrics shows it firing with the inputs Prometheus rules use.
func TestAlerts(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var posts []alert.Payload
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var p alert.Payload
		if err := json.Unmarshal(b, &p); err != nil {
			t.Errorf("webhook body %q: %v", b, err)
		}
		mu.Lock()
		posts = append(posts, p)
		mu.Unlock()
	}))
	defer hook.Close()
	h := startHerald(t, func(c *config.Config) {
		c.Alerts.Enabled = true
		c.Alerts.Interval = 200 * time.Millisecond
		c.Alerts.Email = []string{"ops@ops.test"}
		c.Alerts.WebhookURL = hook.URL
		c.Alerts.WebhookAllowPrivate = true
		c.Alerts.Rules = map[string]config.AlertRule{}
		for kind := range config.AlertKinds { // only cert_expiry: the others depend on the machine
			c.Alerts.Rules[kind] = config.AlertRule{Kind: kind, Enabled: false, Set: map[string]bool{"enabled": true}}
		}
		c.Alerts.Rules["cert_expiry"] = config.AlertRule{Kind: "cert_expiry", Enabled: true, Threshold: (200 * 365 * 24 * time.Hour).Seconds(),
			Set: map[string]bool{"threshold": true}}
	})
	// Published after the start: a notification queued before is retried.
	mx := h.remoteMX("ops.test", testmx.Config{})
	msgs := mx.WaitMessages(t, 1, 10*time.Second)
	if len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "ops@ops.test" || msgs[0].From != "" {
		t.Fatalf("alert mail: from <%s> to %v", msgs[0].From, msgs[0].Rcpts)
	}
	body := string(msgs[0].Body)
	if !strings.Contains(body, "Subject: [Herald] FIRING: cert_expiry "+h.cfg.Server.NodeID+" on mx.herald.test\r\n") || !strings.Contains(body, "Auto-Submitted: auto-generated") {
		t.Errorf("alert mail:\n%s", body)
	}
	mu.Lock()
	got := append([]alert.Payload(nil), posts...)
	mu.Unlock()
	if len(got) != 1 || got[0].Herald.Rule != "cert_expiry" || got[0].Herald.State != "firing" {
		t.Errorf("webhook posts: %+v", got)
	}
	resp, err := http.Get("http://" + h.addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`herald_alert_firing{rule="cert_expiry"} 1`, `herald_alert_transitions_total{rule="cert_expiry",state="firing"} 1`,
		"herald_tls_certificate_expiry_timestamp_seconds ", "herald_disk_free_bytes ", "herald_disk_size_bytes "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, b)
		}
	}
}
