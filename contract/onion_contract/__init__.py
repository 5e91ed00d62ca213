"""The contract between the operator and the router: the Onion API and the router's config.

Both sides import it; it imports neither. `names` holds the API's names (group, kind, labels,
annotations, children, Leases), `spec` the Onion spec models, `status` the shape of the status,
`router_config` the file the operator renders and the router reads. `generate` writes the CRD
and the RBAC rules from them (`make generate`).
"""
