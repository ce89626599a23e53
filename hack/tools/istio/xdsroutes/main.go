// Command xdsroutes connects to istiod as an ingress gateway proxy would and prints the HTTP route
// configuration istiod sends it, one JSON line per push, so that tests and the bench can see what
// Istio would program into Envoy for the objects the operator writes, without an Envoy.
//
// The proxy is identified the way a gateway pod's istio-agent identifies it: a node id
// router~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local and the pod's labels in the node metadata,
// which is what istiod matches Gateway selectors against.
//
// Each line is {"receivedUnixNano":..., "version":..., "name":"http.80", "virtualHosts":[{"name":...,
// "domains":[...], "routes":[{"name":..., "clusters":[{"name":"outbound|5000|v1|chat.ns.svc.cluster.local",
// "weight":75}, ...], "directResponse":0}]}]}: a route to one cluster shows it with weight 100 (all of
// it), a weighted route each cluster with its weight. Errors and reconnections go to stderr; with
// -once the first answer is printed and the command exits.
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
}

type httpRoute struct {
	Name     string    `json:"name"`
	Clusters []cluster `json:"clusters"`
	// The status of a route answered by the proxy itself (such as istiod's 404 for no match), else 0.
	DirectResponse uint32 `json:"directResponse"`
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
	node, err := proxyNode(*namespace, *pod, *ip, labels)
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

func proxyNode(namespace, pod, ip string, labels map[string]string) (*core.Node, error) {
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
		Id:       fmt.Sprintf("router~%s~%s.%s~%s.svc.cluster.local", ip, pod, namespace, namespace),
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
			hr := httpRoute{Name: r.GetName(), Clusters: []cluster{}}
			if a := r.GetRoute(); a != nil {
				if c := a.GetCluster(); c != "" {
					hr.Clusters = append(hr.Clusters, cluster{Name: c, Weight: 100})
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					hr.Clusters = append(hr.Clusters, cluster{Name: wc.GetName(), Weight: wc.GetWeight().GetValue()})
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
