# The cluster's PKI, for hack/cluster.sh (sourced, never run): a CA, the components' certificates
# and keys, and kubeconfigs that carry them.
# shellcheck shell=bash disable=SC2154 # run: set by hack/cluster.sh, which sources this

issue_cert() { # name subject extendedKeyUsage [subjectAltName] [ca]
  local pki=$run/pki name=$1 ca=${5:-ca}
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$2" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$3"
    if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -days 365 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

issue_ca() { # name common-name
  local pki=$run/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/$1.crt" 2>/dev/null
}

gen_pki() {
  local pki=$run/pki
  mkdir -p "$pki"
  issue_ca ca canary-operator-dev-ca
  # The aggregation layer (e.g. a metrics API for the HPA) authenticates the apiserver's proxied
  # requests with a separate CA; without it controller-manager and scheduler log errors forever.
  issue_ca front-proxy-ca canary-operator-dev-front-proxy-ca
  issue_cert front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
  # 10.0.0.1 is the `kubernetes` Service's ClusterIP (first address of --service-cluster-ip-range).
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert admin "/O=system:masters/CN=canary-operator-admin" clientAuth
  # The bootstrap RBAC policy already grants these two user names what the components need.
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok plays the kubelet of every fake node, which no single node identity (Node authorizer) covers.
  issue_cert kwok "/O=system:masters/CN=kwok" clientAuth
  # Service account tokens (TokenRequest, controller-manager credentials) are signed with RSA, the
  # algorithm every client and verifier supports.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() { # file user server
  local pki=$run/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: canary-dev
  cluster:
    server: $3
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$2.crt")
    client-key-data: $(base64 -w0 <"$pki/$2.key")
contexts:
- name: canary-dev
  context:
    cluster: canary-dev
    user: $2
    namespace: default
current-context: canary-dev
EOF
  chmod 600 "$1"
}
