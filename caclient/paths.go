package caclient

// The CA's API paths. The ca package serves exactly these.
const (
	PathSign   = "/api/v1/sign"
	PathRevoke = "/api/v1/revoke"
	PathCerts  = "/api/v1/certs"
	PathAgents = "/api/v1/agents"
	// PathServer issues a TLS server certificate (admin only).
	PathServer = "/api/v1/server"
	// PathAudit lists the audit trail (GET) and records a help-desk action (POST).
	PathAudit = "/api/v1/audit"
)
