// The MCP TypeScript SDK token verifier of docs/key-sets.md, verbatim:
// jose verifying JWTs against the key set the gateway serves. tests/jwks.rs
// runs it through the SDK's requireBearerAuth (jwks.mjs verify-sdk).
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

/**
 * An OAuthTokenVerifier for requireBearerAuth.
 * @param {string} jwksUrl the gateway's key-set route, e.g. https://gw.example.com/.well-known/jwks.json
 * @param {string} issuer the authorization server's issuer
 * @param {string} resource this MCP server's resource identifier (the tokens' audience)
 */
export function gatewayVerifier(jwksUrl, issuer, resource) {
  // `no-cache` on every fetch jose makes: its refetch for a token with an
  // unknown kid then revalidates the gateway's copy with the authorization
  // server (at most once per key set per cooldown), instead of getting the
  // cached set without the new key.
  const jwks = createRemoteJWKSet(new URL(jwksUrl), {
    headers: { 'cache-control': 'no-cache' },
  });
  return {
    async verifyAccessToken(token) {
      let payload;
      try {
        ({ payload } = await jwtVerify(token, jwks, { issuer, audience: resource }));
      } catch (e) {
        throw new InvalidTokenError(`invalid token: ${e.message}`);
      }
      return {
        token,
        clientId: String(payload.client_id ?? payload.azp ?? payload.sub ?? ''),
        scopes: typeof payload.scope === 'string' ? payload.scope.split(' ') : [],
        expiresAt: payload.exp,
        resource: new URL(resource),
      };
    },
  };
}
