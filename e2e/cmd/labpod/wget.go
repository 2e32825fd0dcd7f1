package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// wgetArgs is what the wget stand-in understands of busybox wget's command
// line: -q, -O FILE ("-" for standard output), -T SECONDS, short options
// bundled busybox-style ("-qO-", "-T5"), and one URL ("http://" is assumed
// when it has no scheme, as busybox does).
type wgetArgs struct {
	quiet   bool
	out     string // "" = the URL's base name
	timeout time.Duration
	url     string
}

// errUsage marks a command line the stand-in does not understand.
var errUsage = errors.New("wget: usage: wget [-q] [-O FILE] [-T SECONDS] URL")

func parseWget(args []string) (wgetArgs, error) {
	w := wgetArgs{timeout: 900 * time.Second}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			args, i = args[i+1:], -1
			for _, u := range args {
				if w.url != "" {
					return w, fmt.Errorf("%w: a second URL %q", errUsage, u)
				}
				w.url = u
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			if w.url != "" {
				return w, fmt.Errorf("%w: a second URL %q", errUsage, a)
			}
			w.url = a
			continue
		}
		opts := a[1:]
		for j := 0; j < len(opts); j++ {
			switch c := opts[j]; c {
			case 'q':
				w.quiet = true
			case 'O', 'T':
				v := opts[j+1:]
				if v == "" {
					if i+1 >= len(args) {
						return w, fmt.Errorf("%w: -%c needs a value", errUsage, c)
					}
					i++
					v = args[i]
				}
				if c == 'O' {
					w.out = v
				} else {
					s, err := strconv.Atoi(v)
					if err != nil || s < 0 {
						return w, fmt.Errorf("%w: -T %q", errUsage, v)
					}
					w.timeout = time.Duration(s) * time.Second
				}
				j = len(opts)
			default:
				return w, fmt.Errorf("%w: option -%c", errUsage, c)
			}
		}
	}
	if w.url == "" {
		return w, fmt.Errorf("%w: no URL", errUsage)
	}
	if !strings.Contains(w.url, "://") {
		w.url = "http://" + w.url
	}
	return w, nil
}

// wget fetches one URL as busybox wget would for upstream's e2e exec pods:
// exit 0 with the body written when the server answers 2xx, 1 otherwise.
// (Debian 12's busybox, static or not, crashes on -T.)
func wget(args []string) error {
	w, err := parseWget(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if w.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return fmt.Errorf("wget: %w", err)
	}
	req.Header.Set("User-Agent", "Wget")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fmt.Errorf("wget: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("wget: server returned error: %s", resp.Status)
	}
	out := w.out
	if out == "" {
		if out = path.Base(req.URL.Path); out == "/" || out == "." || out == "" {
			out = "index.html"
		}
	}
	var dst io.Writer = os.Stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return fmt.Errorf("wget: %w", err)
		}
		defer f.Close()
		dst = f
	}
	if _, err := io.Copy(dst, resp.Body); err != nil {
		return fmt.Errorf("wget: %w", err)
	}
	if !w.quiet && out != "-" {
		fmt.Fprintf(os.Stderr, "saved '%s'\n", out)
	}
	return nil
}
