package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// cmdProbe requests one URL and succeeds only on a 2xx answer. It is the
// health check of containers built from the distroless image, which has no
// shell, curl or wget: `tandem probe http://127.0.0.1:8080/readyz`.
func cmdProbe(ctx context.Context, args []string) error {
	f := newFlags("probe", "probe [--timeout 3s] [--insecure] URL")
	timeout := f.Duration("timeout", 3*time.Second, "give up after this long")
	insecure := f.Bool("insecure", false, "accept any TLS certificate (a component serving HTTPS with its own certificate on 127.0.0.1)")
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() != 1 {
		f.Usage()
		return errUsage
	}
	url := f.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(os.Stdout, "%s: %s", url, body)
	return nil
}
