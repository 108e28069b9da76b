package ingest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stalledUpload opens a connection that sends the headers of a POST
// declaring length bytes, then sent bytes of body, then nothing.
func stalledUpload(t *testing.T, addr, token string, length, sent int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	_, err = fmt.Fprintf(c, "POST /v1/streams/pageviews/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n%sContent-Length: %d\r\n\r\n%s",
		auth, length, strings.Repeat(" ", sent))
	require.NoError(t, err)
	return c
}

// readStatus reads one HTTP answer from c.
func readStatus(t *testing.T, c net.Conn, within time.Duration) (int, string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(b)
}

// TestStalledUploadsHoldOnlyWhatArrived plays the lock-out of issue 12: many
// connections declare the largest body and send a few bytes. They hold only
// the buffers for what arrived, one client's share at most, so another
// client is answered at once; and each is cut at ingest.read_timeout with
// 408, giving everything back.
func TestStalledUploadsHoldOnlyWhatArrived(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 1 << 20, maxInflight: 16 << 20, tokens: `"attacker-token", "good-token"`,
		ingestExtra: ", read_timeout: 2s, read_header_timeout: 1s, write_timeout: 10s"})
	start := time.Now()
	var conns []net.Conn
	for range 32 {
		conns = append(conns, stalledUpload(t, e.gw.Addr(), "attacker-token", 1<<20, 8))
	}
	require.Eventually(t, func() bool {
		return metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil) == 32*firstBuffer
	}, 2*time.Second, 10*time.Millisecond, "each stalled upload holds one first buffer, not its declared length")

	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("legit", ""), "Authorization", "Bearer good-token")
	require.Equal(t, http.StatusOK, code, "%+v", res)
	require.Less(t, time.Since(start), time.Second)

	for _, c := range conns {
		code, body := readStatus(t, c, 5*time.Second)
		require.Equal(t, http.StatusRequestTimeout, code)
		require.Contains(t, body, "ingest.read_timeout")
	}
	require.Less(t, time.Since(start), 4*time.Second, "cut at the 2s read timeout")
	require.Equal(t, 0.0, metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil), "every byte is given back")
	require.Equal(t, 32.0, metricValue(t, e.reg, "tandem_ingest_requests_refused_total", map[string]string{"limit": "read_timeout"}))
}

// TestOneClientCannotTakeTheWholeBudget: a client whose uploads fill its
// share (ingest.max_inflight_bytes_per_client) is refused 429 naming that
// setting, while another client is still served.
func TestOneClientCannotTakeTheWholeBudget(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 256 << 10, maxInflight: 2 << 20, tokens: `"greedy-token", "good-token"`,
		ingestExtra: ", max_inflight_bytes_per_client: 524288"})
	for range 8 { // 8 first buffers of 64 KiB: the greedy client's whole share
		stalledUpload(t, e.gw.Addr(), "greedy-token", 256<<10, 8)
	}
	require.Eventually(t, func() bool {
		return metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil) == 8*firstBuffer
	}, 2*time.Second, 10*time.Millisecond)
	start := time.Now()
	c := stalledUpload(t, e.gw.Addr(), "greedy-token", 256<<10, 8)
	code, body := readStatus(t, c, 2*time.Second)
	require.Equal(t, http.StatusTooManyRequests, code)
	require.Contains(t, body, "ingest.max_inflight_bytes_per_client")
	require.Less(t, time.Since(start), time.Second, "the refusal is answered before the body")

	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("other", ""), "Authorization", "Bearer good-token")
	require.Equal(t, http.StatusOK, code, "%+v", res)
	require.Equal(t, 1, res.Accepted)
}

// TestTooManyEventsIs413NamingTheLimit: a body of more events than
// ingest.max_events_per_request is refused whole, before any is decoded.
func TestTooManyEventsIs413NamingTheLimit(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 8 << 20, maxInflight: 64 << 20, ingestExtra: ", max_events_per_request: 1000"})
	ones := "[" + strings.Repeat("1,", 4<<20-2) + "1]" // 4.2 M elements in 8 MiB, the amplification of issue 12
	for _, tc := range []struct{ name, ct, body string }{
		{"array", "application/json", ones},
		{"ndjson", "application/x-ndjson", strings.Repeat(e.event("x", "")+"\n", 1001)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, res, _ := e.post(t, "pageviews", tc.ct, tc.body)
			require.Equal(t, http.StatusRequestEntityTooLarge, code)
			require.Contains(t, res.Error, "ingest.max_events_per_request")
			require.Equal(t, 0, res.Accepted)
		})
	}
	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", strings.Repeat("\n", 1<<20)+e.event("one", ""))
	require.Equal(t, http.StatusOK, code, "blank lines are not events: %+v", res)
	require.Equal(t, 1, res.Accepted)
	require.Len(t, e.readTopic(t), 1)
}

// TestOversizedBodySentWholeGets413: a client that writes its whole body
// before reading (as Python's urllib does) reads the 413, not a reset.
func TestOversizedBodySentWholeGets413(t *testing.T) {
	// Nearly twice the limit: more than the kernel's socket buffers hold,
	// so the client's write blocks until the gateway reads.
	e := startGateway(t, gwOpts{maxBody: 8 << 20, maxInflight: 64 << 20})
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			c, err := net.DialTimeout("tcp", e.gw.Addr(), 2*time.Second)
			require.NoError(t, err)
			defer c.Close()
			body := strings.Repeat(e.event("big", "")+"\n", (15<<20)/len(e.event("big", "")))
			var req string
			if chunked {
				req = fmt.Sprintf("POST /v1/streams/pageviews/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
			} else {
				req = fmt.Sprintf("POST /v1/streams/pageviews/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(10*time.Second)))
			_, err = io.WriteString(c, req)
			require.NoError(t, err, "the whole body is taken")
			code, msg := readStatus(t, c, 5*time.Second)
			require.Equal(t, http.StatusRequestEntityTooLarge, code)
			require.Contains(t, msg, "ingest.max_body_bytes")
		})
	}
	require.Equal(t, 0.0, metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil))
}

// TestRefusalWithExpectContinueClosesAtOnce: a client that waits for "100
// Continue" before sending its body gets the refusal and the end of the
// connection at once; the gateway does not wait for a body that will not
// come.
func TestRefusalWithExpectContinueClosesAtOnce(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 1 << 20, maxInflight: 4 << 20})
	c, err := net.DialTimeout("tcp", e.gw.Addr(), 2*time.Second)
	require.NoError(t, err)
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/streams/pageviews/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", 2<<20)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the connection is closed after the refusal")
}

// TestUploadsStalledAfterSendingMostOfTheBody: uploads that send almost
// their whole body and stall fill their client's share; that client (the
// same token) is refused 429 naming the share while another is served, and
// within the read timeout of the attack's start the stalled uploads are cut
// and the client is served again.
func TestUploadsStalledAfterSendingMostOfTheBody(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 256 << 10, maxInflight: 4 << 20, tokens: `"shared-token", "other-token"`,
		ingestExtra: ", read_timeout: 2s, read_header_timeout: 1s, write_timeout: 10s, max_inflight_bytes_per_client: 1048576"})
	start := time.Now()
	for range 4 { // 4 buffers of 256 KiB: the shared token's whole share
		stalledUpload(t, e.gw.Addr(), "shared-token", 256<<10, 255<<10)
	}
	require.Eventually(t, func() bool {
		return metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil) == 1<<20
	}, 2*time.Second, 10*time.Millisecond)
	code, res, hdr := e.post(t, "pageviews", "application/x-ndjson", e.event("same", ""), "Authorization", "Bearer shared-token")
	require.Equal(t, http.StatusTooManyRequests, code)
	require.Contains(t, res.Error, "ingest.max_inflight_bytes_per_client")
	require.Equal(t, "1", hdr.Get("Retry-After"))
	code, _, _ = e.post(t, "pageviews", "application/x-ndjson", e.event("other", ""), "Authorization", "Bearer other-token")
	require.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool {
		code, _, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("same", ""), "Authorization", "Bearer shared-token")
		return code == http.StatusOK
	}, 5*time.Second, 100*time.Millisecond)
	require.Less(t, time.Since(start), 2*time.Second+2*time.Second, "served again within the read timeout of the attack's start (plus slack for a loaded machine)")
	require.Len(t, e.readTopic(t), 2)
}
