// Command xdsroutes connects to istiod as an ingress gateway proxy would and prints the HTTP route
// configuration istiod sends it, one JSON line per push, so that tests and the bench can see what
// Istio would program into Envoy for the objects the operator writes, without an Envoy.
//
// The proxy is identified the way a gateway pod's istio-agent identifies it: a node id
// router~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local and the pod's labels in the node metadata
// (with -type sidecar, a workload's sidecar: sidecar~..., which gets the mesh's outbound routes),
// which is what istiod matches Gateway selectors against.
//
// Each line is {"receivedUnixNano":..., "version":..., "name":"http.80", "virtualHosts":[{"name":...,
// "domains":[...], "routes":[{"name":..., "clusters":[{"name":"outbound|5000|v1|chat.ns.svc.cluster.local",
// "weight":75}, ...], "directResponse":0, "match":{"prefix":"/"}}]}]}: a route to one cluster shows it with
// weight 100 (all of it), a weighted route each cluster with its weight. Errors and reconnections go
// to stderr; with -once the first answer is printed and the command exits.
//
// A route also says when it applies and what it adds to its answers, for readers that follow more
// than the first route (the ingress stand-in, tools/ingress_standin/, routes as Envoy would):
//
//	"match": {"prefix"|"path"|"regex"|"pathSeparatedPrefix": "...", "caseSensitive": false,
//	          "headers": [{"name":"cookie", "regex":"^(.*;\\s*)?canary-model=v2(;.*)?$"},
//	                      {"name":"x-canary-model", "exact":"v2", "invert":true}, ...],
//	          "other": ["query_parameters ...", ...]}
//	"responseHeadersToAdd": [{"name":"set-cookie", "value":"canary-model=v1; Path=/",
//	                          "appendAction":"APPEND_IF_EXISTS_OR_ADD"}]
//	"responseHeadersToRemove": ["..."]
//	"redirect": true
//
// and each cluster of a weighted route its own "responseHeadersToAdd" and "responseHeadersToRemove".
// A header matcher has one of "exact", "regex" (RE2, matched against the whole value), "prefix",
// "suffix", "contains", "present" (true: the header is there; false: it is not), or "other" (the
// matcher's text, for kinds none of these describe), with "ignoreCase", "invert" and
// "treatMissingAsEmpty" when set. The route's "other" lists the conditions none of the fields
// describe (query parameters, runtime fractions, gRPC, ...), so that a reader that cannot follow
// them knows they are there. Fields with nothing to say are left out ("caseSensitive" too when
// Envoy's default, true, applies): a route without conditions or headers adds only
// "match":{"prefix":"/"} to the fields it always had.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const routeType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	l[k] = v
	return nil
}

type cluster struct {
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
	// What Envoy adds to (removes from) the answers this cluster gives, on top of the route's.
	ResponseHeadersToAdd    []header `json:"responseHeadersToAdd,omitempty"`
	ResponseHeadersToRemove []string `json:"responseHeadersToRemove,omitempty"`
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Envoy's HeaderAppendAction: APPEND_IF_EXISTS_OR_ADD (Istio's "add"), OVERWRITE_IF_EXISTS_OR_ADD
	// (its "set"), ADD_IF_ABSENT or OVERWRITE_IF_EXISTS.
	AppendAction string `json:"appendAction"`
}

// Pointers: an empty string is a condition of its own (exact "" matches an empty value), and
// absent means the route does not test that.
type headerMatch struct {
	Name                string  `json:"name"`
	Exact               *string `json:"exact,omitempty"`
	Regex               *string `json:"regex,omitempty"`
	Prefix              *string `json:"prefix,omitempty"`
	Suffix              *string `json:"suffix,omitempty"`
	Contains            *string `json:"contains,omitempty"`
	Present             *bool   `json:"present,omitempty"`
	Other               string  `json:"other,omitempty"`
	IgnoreCase          bool    `json:"ignoreCase,omitempty"`
	Invert              bool    `json:"invert,omitempty"`
	TreatMissingAsEmpty bool    `json:"treatMissingAsEmpty,omitempty"`
}

type routeMatch struct {
	Prefix              *string       `json:"prefix,omitempty"`
	Path                *string       `json:"path,omitempty"`
	Regex               *string       `json:"regex,omitempty"`
	PathSeparatedPrefix *string       `json:"pathSeparatedPrefix,omitempty"`
	CaseSensitive       *bool         `json:"caseSensitive,omitempty"`
	Headers             []headerMatch `json:"headers,omitempty"`
	Other               []string      `json:"other,omitempty"`
}

type httpRoute struct {
	Name     string    `json:"name"`
	Clusters []cluster `json:"clusters"`
	// The status of a route answered by the proxy itself (such as istiod's 404 for no match), else 0.
	DirectResponse          uint32     `json:"directResponse"`
	Match                   routeMatch `json:"match"`
	ResponseHeadersToAdd    []header   `json:"responseHeadersToAdd,omitempty"`
	ResponseHeadersToRemove []string   `json:"responseHeadersToRemove,omitempty"`
	// The route answers with a redirect, sending the request nowhere.
	Redirect bool `json:"redirect,omitempty"`
}

type virtualHost struct {
	Name    string      `json:"name"`
	Domains []string    `json:"domains"`
	Routes  []httpRoute `json:"routes"`
}

type push struct {
	ReceivedUnixNano int64         `json:"receivedUnixNano"`
	Version          string        `json:"version"`
	Name             string        `json:"name"`
	VirtualHosts     []virtualHost `json:"virtualHosts"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:15010", "istiod's plaintext xDS address")
	namespace := flag.String("namespace", "aks-istio-ingress", "the gateway pod's namespace")
	pod := flag.String("pod", "aks-istio-ingressgateway-external-0", "the gateway pod's name")
	ip := flag.String("ip", "10.244.255.254", "the gateway pod's IP")
	routeName := flag.String("route", "http.80", "the route configuration to read (http.PORT for a Gateway's HTTP port)")
	once := flag.Bool("once", false, "print the first answer and exit")
	timeout := flag.Duration("timeout", 30*time.Second, "with -once: longest wait for the answer")
	labels := labelFlags{}
	flag.Var(labels, "label", "a label of the gateway pod, KEY=VALUE (repeat); Gateway selectors match these")
	nodeType := flag.String("type", "router", "the proxy's type: router (a gateway) or sidecar (a workload's proxy in the mesh, whose outbound routes are named by port, such as 5000)")
	flag.Parse()
	if len(labels) == 0 {
		labels["istio"] = "aks-istio-ingressgateway-external"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *once {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if *nodeType != "router" && *nodeType != "sidecar" {
		fmt.Fprintf(os.Stderr, "xdsroutes: -type %q is neither router nor sidecar\n", *nodeType)
		os.Exit(2)
	}
	node, err := proxyNode(*nodeType, *namespace, *pod, *ip, labels)
	if err != nil {
		fmt.Fprintf(os.Stderr, "xdsroutes: %v\n", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	// istiod restarts (tests restart it) and the stream ends: connect again, as a proxy does.
	for {
		err := stream(ctx, *addr, node, *routeName, *once, out)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			if *once {
				fmt.Fprintf(os.Stderr, "xdsroutes: no route configuration %s from %s within %s: %v\n", *routeName, *addr, *timeout, err)
				os.Exit(1)
			}
			return
		}
		fmt.Fprintf(os.Stderr, "xdsroutes: %v; connecting again in 1s\n", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func proxyNode(nodeType, namespace, pod, ip string, labels map[string]string) (*core.Node, error) {
	l := map[string]any{}
	for k, v := range labels {
		l[k] = v
	}
	meta, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":    namespace,
		"NAME":         pod,
		"LABELS":       l,
		"INSTANCE_IPS": ip,
		"CLUSTER_ID":   "Kubernetes",
		// istiod tailors what it sends to the proxy's version: that of the istiod built here.
		"ISTIO_VERSION":   "1.30.0",
		"WORKLOAD_NAME":   pod,
		"SERVICE_ACCOUNT": "default",
	})
	if err != nil {
		return nil, err
	}
	return &core.Node{
		Id:       fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", nodeType, ip, pod, namespace, namespace),
		Metadata: meta,
	}, nil
}

// stream asks for one route configuration and prints every version istiod sends, acknowledging
// each (an unacknowledged response holds back the next push). Returns nil only with once.
func stream(ctx context.Context, addr string, node *core.Node, name string, once bool, out *json.Encoder) error {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A gateway in front of a thousand releases gets a large route configuration.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ads, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	req := &discovery.DiscoveryRequest{Node: node, TypeUrl: routeType, ResourceNames: []string{name}}
	if err := ads.Send(req); err != nil {
		return err
	}
	for {
		resp, err := ads.Recv()
		if err != nil {
			return err
		}
		received := time.Now().UnixNano()
		if resp.GetTypeUrl() == routeType {
			for _, resource := range resp.GetResources() {
				rc := &route.RouteConfiguration{}
				if err := proto.Unmarshal(resource.GetValue(), rc); err != nil {
					return fmt.Errorf("decoding a route configuration: %w", err)
				}
				if rc.GetName() != name {
					continue
				}
				if err := out.Encode(summary(rc, resp.GetVersionInfo(), received)); err != nil {
					return err
				}
				if once {
					return nil
				}
			}
		}
		ack := &discovery.DiscoveryRequest{
			TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
			ResponseNonce: resp.GetNonce(), ResourceNames: []string{name},
		}
		if err := ads.Send(ack); err != nil {
			return err
		}
	}
}

func summary(rc *route.RouteConfiguration, version string, received int64) push {
	p := push{ReceivedUnixNano: received, Version: version, Name: rc.GetName(), VirtualHosts: []virtualHost{}}
	for _, vh := range rc.GetVirtualHosts() {
		v := virtualHost{Name: vh.GetName(), Domains: vh.GetDomains(), Routes: []httpRoute{}}
		for _, r := range vh.GetRoutes() {
			hr := httpRoute{
				Name: r.GetName(), Clusters: []cluster{}, Match: matchOf(r.GetMatch()),
				ResponseHeadersToAdd:    headers(r.GetResponseHeadersToAdd()),
				ResponseHeadersToRemove: r.GetResponseHeadersToRemove(),
				Redirect:                r.GetRedirect() != nil,
			}
			if a := r.GetRoute(); a != nil {
				if c := a.GetCluster(); c != "" {
					hr.Clusters = append(hr.Clusters, cluster{Name: c, Weight: 100})
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					hr.Clusters = append(hr.Clusters, cluster{
						Name: wc.GetName(), Weight: wc.GetWeight().GetValue(),
						ResponseHeadersToAdd:    headers(wc.GetResponseHeadersToAdd()),
						ResponseHeadersToRemove: wc.GetResponseHeadersToRemove(),
					})
				}
			}
			if d := r.GetDirectResponse(); d != nil {
				hr.DirectResponse = d.GetStatus()
			}
			v.Routes = append(v.Routes, hr)
		}
		p.VirtualHosts = append(p.VirtualHosts, v)
	}
	return p
}

func headers(options []*core.HeaderValueOption) []header {
	var out []header
	for _, o := range options {
		value := o.GetHeader().GetValue()
		if value == "" {
			value = string(o.GetHeader().GetRawValue())
		}
		action := o.GetAppendAction().String()
		// The deprecated boolean, when set, is what Envoy goes by.
		if a := o.GetAppend(); a != nil {
			action = core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD.String()
			if a.GetValue() {
				action = core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD.String()
			}
		}
		out = append(out, header{Name: o.GetHeader().GetKey(), Value: value, AppendAction: action})
	}
	return out
}

func matchOf(m *route.RouteMatch) routeMatch {
	var out routeMatch
	switch p := m.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		out.Prefix = &p.Prefix
	case *route.RouteMatch_Path:
		out.Path = &p.Path
	case *route.RouteMatch_SafeRegex:
		regex := p.SafeRegex.GetRegex()
		out.Regex = &regex
	case *route.RouteMatch_PathSeparatedPrefix:
		out.PathSeparatedPrefix = &p.PathSeparatedPrefix
	case nil:
	default:
		out.Other = append(out.Other, fmt.Sprintf("path %v", m.GetPathSpecifier()))
	}
	if c := m.GetCaseSensitive(); c != nil && !c.GetValue() {
		sensitive := false
		out.CaseSensitive = &sensitive
	}
	for _, h := range m.GetHeaders() {
		out.Headers = append(out.Headers, headerMatchOf(h))
	}
	// Every other condition Envoy would test: named, so a reader can refuse what it cannot follow.
	other := func(what string, present bool, value any) {
		if present {
			out.Other = append(out.Other, fmt.Sprintf("%s %v", what, value))
		}
	}
	other("query_parameters", len(m.GetQueryParameters()) > 0, m.GetQueryParameters())
	other("cookies", len(m.GetCookies()) > 0, m.GetCookies())
	other("runtime_fraction", m.GetRuntimeFraction() != nil, m.GetRuntimeFraction())
	other("grpc", m.GetGrpc() != nil, m.GetGrpc())
	other("tls_context", m.GetTlsContext() != nil, m.GetTlsContext())
	other("dynamic_metadata", len(m.GetDynamicMetadata()) > 0, m.GetDynamicMetadata())
	other("filter_state", len(m.GetFilterState()) > 0, m.GetFilterState())
	other("path_match_policy", m.GetPathMatchPolicy() != nil, m.GetPathMatchPolicy())
	return out
}

func headerMatchOf(h *route.HeaderMatcher) headerMatch {
	out := headerMatch{
		Name: h.GetName(), Invert: h.GetInvertMatch(), TreatMissingAsEmpty: h.GetTreatMissingHeaderAsEmpty(),
	}
	str := func(s string) *string { return &s }
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_StringMatch:
		sm := s.StringMatch
		out.IgnoreCase = sm.GetIgnoreCase()
		switch p := sm.GetMatchPattern().(type) {
		case *matcher.StringMatcher_Exact:
			out.Exact = str(p.Exact)
		case *matcher.StringMatcher_Prefix:
			out.Prefix = str(p.Prefix)
		case *matcher.StringMatcher_Suffix:
			out.Suffix = str(p.Suffix)
		case *matcher.StringMatcher_Contains:
			out.Contains = str(p.Contains)
		case *matcher.StringMatcher_SafeRegex:
			out.Regex = str(p.SafeRegex.GetRegex())
		default:
			out.Other = fmt.Sprintf("string_match %v", sm)
		}
	case *route.HeaderMatcher_ExactMatch:
		out.Exact = str(s.ExactMatch)
	case *route.HeaderMatcher_SafeRegexMatch:
		out.Regex = str(s.SafeRegexMatch.GetRegex())
	case *route.HeaderMatcher_PrefixMatch:
		out.Prefix = str(s.PrefixMatch)
	case *route.HeaderMatcher_SuffixMatch:
		out.Suffix = str(s.SuffixMatch)
	case *route.HeaderMatcher_ContainsMatch:
		out.Contains = str(s.ContainsMatch)
	case *route.HeaderMatcher_PresentMatch:
		present := s.PresentMatch
		out.Present = &present
	case nil:
		// No specifier: Envoy tests only that the header is there.
		present := true
		out.Present = &present
	default:
		out.Other = fmt.Sprintf("%v", h.GetHeaderMatchSpecifier())
	}
	return out
}
