# Rewrites kwok's "fast" stages (hack/build-tools.sh takes them from the pinned kwok module) so that
# pods in namespaces named rollout-* become Ready only `delay` milliseconds after kwok first sees
# them scheduled, and all other pods at once, as before. The rollout tests run in such namespaces:
# waiting for a canary's pods, a new revision's pods and a progress deadline are then tested with
# real start-up time, while every other test keeps instant pods.
#
# kwok picks among the stages whose selectors match an object, so the fast pod-ready stage gets the
# opposite selector of its slow copy. A selector key is a jq query; the boolean it yields compares
# as "true" or "false".
#
# Usage: awk -v delay=3000 -f hack/kwok-slow-pods.awk stages.yaml
function namespace_is_slow(op) {
  return "    - key: '.metadata.namespace | startswith(\"rollout-\")'\n      operator: '" op "'\n      values:\n      - 'true'\n"
}
function emit(doc,    fast, slow) {
  if (doc == "") return
  if (doc !~ /\n  name: pod-ready\n/) {
    printf "---\n%s", doc
    return
  }
  fast = doc
  if (!sub(/    matchExpressions:\n/, "    matchExpressions:\n" namespace_is_slow("NotIn"), fast)) {
    print "kwok-slow-pods.awk: no matchExpressions in the pod-ready stage" > "/dev/stderr"
    exit 1
  }
  slow = doc
  sub(/\n  name: pod-ready\n/, "\n  name: pod-ready-slow\n", slow)
  sub(/    matchExpressions:\n/, "    matchExpressions:\n" namespace_is_slow("In"), slow)
  if (!sub(/\n  next:\n/, "\n  delay:\n    durationMilliseconds: " delay "\n  next:\n", slow)) {
    print "kwok-slow-pods.awk: no next: in the pod-ready stage" > "/dev/stderr"
    exit 1
  }
  printf "---\n%s---\n%s", fast, slow
}
/^---$/ { emit(doc); doc = ""; next }
{ doc = doc $0 "\n" }
END { emit(doc) }
