// Package caclient talks to an imapgate CA's HTTPS API with a role credential
// (an enrollment agent's or an admin's certificate and key). It is what the
// token tools, the enrollment UI and the admin CLI use; it does not import the
// CA itself, so those parts stay free of smallstep's dependency tree.
package caclient
