package upnp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pppIGD is an IGDv1 device on loopback offering only WANPPPConnection:1
// and accepting only permanent leases (UPnP error 725): two behaviours of
// real gateways that the lab's miniupnpd does not have. goupnp reads its
// description and speaks SOAP to it as to any gateway.
type pppIGD struct {
	mu      sync.Mutex
	actions []string
	table   map[string]string // "TCP/80" -> internal client
}

const pppDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
 <specVersion><major>1</major><minor>0</minor></specVersion>
 <device>
  <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
  <friendlyName>DSL router</friendlyName><UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:00000000-0000-0000-0000-000000000002</UDN>
   <deviceList><device>
    <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:00000000-0000-0000-0000-000000000003</UDN>
    <serviceList><service>
     <serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>
     <serviceId>urn:upnp-org:serviceId:WANPPPConn1</serviceId>
     <controlURL>/ctl/PPP</controlURL><eventSubURL>/evt/PPP</eventSubURL><SCPDURL>/PPP.xml</SCPDURL>
    </service></serviceList>
   </device></deviceList>
  </device></deviceList>
 </device>
</root>`

var soapArg = regexp.MustCompile(`<(New[A-Za-z]+)>([^<]*)</New[A-Za-z]+>`)

func (g *pppIGD) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/rootDesc.xml" {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, pppDesc)
		return
	}
	body, _ := io.ReadAll(r.Body)
	action := r.Header.Get("SOAPAction")
	action = strings.Trim(action[strings.LastIndex(action, "#")+1:], `"`)
	args := map[string]string{}
	for _, m := range soapArg.FindAllStringSubmatch(string(body), -1) {
		args[m[1]] = m[2]
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.actions = append(g.actions, action+" "+args["NewLeaseDuration"])
	id := args["NewProtocol"] + "/" + args["NewExternalPort"]
	fault := func(code int, desc string) {
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code, desc)
	}
	reply := func(inner string) {
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="urn:schemas-upnp-org:service:WANPPPConnection:1">%s</u:%sResponse></s:Body></s:Envelope>`, action, inner, action)
	}
	switch action {
	case "GetExternalIPAddress":
		reply("<NewExternalIPAddress>198.51.100.7</NewExternalIPAddress>")
	case "AddPortMapping":
		if args["NewLeaseDuration"] != "0" {
			fault(725, "OnlyPermanentLeasesSupported")
			return
		}
		g.table[id] = args["NewInternalClient"]
		reply("")
	case "DeletePortMapping":
		if _, ok := g.table[id]; !ok {
			fault(714, "NoSuchEntryInArray")
			return
		}
		delete(g.table, id)
		reply("")
	default:
		fault(401, "Invalid Action")
	}
}

func startPPP(t *testing.T) (*pppIGD, *url.URL) {
	g := &pppIGD{table: map[string]string{}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	loc, err := url.Parse(srv.URL + "/rootDesc.xml")
	if err != nil {
		t.Fatal(err)
	}
	return g, loc
}

func TestGatewayPPPAndSOAPFaults(t *testing.T) {
	g, loc := startPPP(t)
	ctx := context.Background()
	gw, err := fromLocation(ctx, loc, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gw.String(), "WANPPPConnection:1 at ") {
		t.Errorf("gateway %q, want the WANPPPConnection:1 service", gw)
	}
	if ext, err := gw.ExternalAddress(ctx); err != nil || ext != netip.MustParseAddr("198.51.100.7") {
		t.Errorf("external address %v, %v", ext, err)
	}
	m := Mapping{ID: ID{TCP, 80}, VIP: netip.MustParseAddr("10.9.9.9")}
	if err := gw.AddPortMapping(ctx, m, time.Hour, "t"); !errors.Is(err, ErrPermanentOnly) || !strings.Contains(err.Error(), "725") {
		t.Errorf("lease 1h: %v, want ErrPermanentOnly (725)", err)
	}
	if err := gw.AddPortMapping(ctx, m, 0, "t"); err != nil {
		t.Errorf("lease 0: %v", err)
	}
	if err := gw.DeletePortMapping(ctx, m); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := gw.DeletePortMapping(ctx, m); !errors.Is(err, ErrNoSuchEntry) {
		t.Errorf("second delete: %v, want ErrNoSuchEntry (714)", err)
	}
	if len(g.table) != 0 {
		t.Errorf("table %v", g.table)
	}
}

// The Mapper falls back to permanent mappings on a real SOAP 725 fault and
// keeps using lease 0 for later additions.
func TestMapperPermanentFallbackOverSOAP(t *testing.T) {
	g, loc := startPPP(t)
	m, err := New(Options{
		Discover:   func(ctx context.Context) (Gateway, error) { return fromLocation(ctx, loc, 5*time.Second) },
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.9.9.9")
	m.Set("ns/a", Want{Lease: time.Hour, Mappings: []Mapping{{ID: ID{TCP, 80}, VIP: vip}}})
	m.step(context.Background())
	m.Set("ns/b", Want{Lease: time.Hour, Mappings: []Mapping{{ID: ID{UDP, 53}, VIP: vip}}})
	m.step(context.Background())
	g.mu.Lock()
	defer g.mu.Unlock()
	want := []string{"AddPortMapping 3600", "AddPortMapping 0", "GetExternalIPAddress ", "AddPortMapping 0", "GetExternalIPAddress "}
	if fmt.Sprint(g.actions) != fmt.Sprint(want) {
		t.Errorf("SOAP actions %q, want %q", g.actions, want)
	}
	if g.table["TCP/80"] != "10.9.9.9" || g.table["UDP/53"] != "10.9.9.9" {
		t.Errorf("gateway table %v", g.table)
	}
	for _, h := range m.Held() {
		if h.Lease != 0 || h.Asked != time.Hour {
			t.Errorf("held %+v, want lease 0 asked 1h", h)
		}
	}
}

// TestOnLink: a gateway's answer is used only when its location (and its
// control URL) names an address inside a subnet of the searched interface.
func TestOnLink(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.7.0.11/24"), netip.MustParsePrefix("192.168.5.2/30")}
	for raw, want := range map[string]bool{
		"http://10.7.0.1:5000/rootDesc.xml":      true,
		"http://192.168.5.1:1900/desc.xml":       true,
		"http://10.7.0.11:5000/rootDesc.xml":     false, // this host itself
		"http://10.8.0.1:5000/rootDesc.xml":      false, // another network
		"http://192.168.5.9/desc.xml":            false,
		"http://router.example:5000/desc.xml":    false, // a name: resolved anywhere
		"http://[fd00::1]:5000/desc.xml":         false,
		"http://[::ffff:10.7.0.1]:5000/desc.xml": true,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := onLink(prefixes, u); got != want {
			t.Errorf("onLink(%s) = %v, want %v", raw, got, want)
		}
	}
}
