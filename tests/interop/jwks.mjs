// A resource server's token verification with jose, as docs/key-sets.md
// configures it, pointed at the gateway (driven by tests/jwks.rs).
//
//   node jwks.mjs keys ISSUER AUDIENCE KID...
//     Generates one key pair per KID (RS256 for even positions, ES256 for
//     odd ones) and prints {"keys": {KID: public JWK}, "tokens": {KID: JWT}}:
//     the public keys for the test's upstream to publish, and a token
//     signed by each private key.
//
//   node jwks.mjs verify JWKS_URL ISSUER AUDIENCE TOKEN...
//     Verifies the tokens in order with one createRemoteJWKSet, configured
//     with `cache-control: no-cache` so that jose's own refetch on an
//     unknown kid reaches the upstream through the gateway, and prints
//     [{"ok": true, "kid": ...} | {"ok": false, "error": ...}, ...].
import {
  createRemoteJWKSet,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
  decodeProtectedHeader,
} from 'jose';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'keys') {
  const [issuer, audience, ...kids] = args;
  const keys = {};
  const tokens = {};
  for (const [i, kid] of kids.entries()) {
    const alg = i % 2 === 0 ? 'RS256' : 'ES256';
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    keys[kid] = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    tokens[kid] = await new SignJWT({ scope: 'mcp:tools' })
      .setProtectedHeader({ alg, kid })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject('user-1')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);
  }
  console.log(JSON.stringify({ keys, tokens }));
} else if (mode === 'verify') {
  const [url, issuer, audience, ...tokens] = args;
  // The setting docs/key-sets.md gives: every fetch jose makes (the first,
  // its refresh, its refetch on an unknown kid) asks the gateway to
  // revalidate; the gateway bounds that per key set (cooldown).
  const jwks = createRemoteJWKSet(new URL(url), {
    headers: { 'cache-control': 'no-cache' },
  });
  const results = [];
  for (const token of tokens) {
    try {
      const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer, audience });
      results.push({ ok: true, kid: protectedHeader.kid, sub: payload.sub });
    } catch (e) {
      results.push({ ok: false, kid: decodeProtectedHeader(token).kid, error: `${e.code ?? ''} ${e.message}` });
    }
  }
  console.log(JSON.stringify(results));
} else if (mode === 'verify-sdk') {
  // The MCP SDK's requireBearerAuth with the verifier of docs/key-sets.md,
  // called as express would call it; prints the status per token.
  const { requireBearerAuth } = await import('@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js');
  const { gatewayVerifier } = await import('./mcp-verifier.mjs');
  const [url, issuer, resource, ...tokens] = args;
  const auth = requireBearerAuth({
    verifier: gatewayVerifier(url, issuer, resource),
    requiredScopes: ['mcp:tools'],
    expectedResource: new URL(resource),
  });
  const results = [];
  for (const token of tokens) {
    const result = await new Promise((resolve) => {
      const req = { headers: { authorization: `Bearer ${token}` } };
      const res = {
        statusCode: 200,
        set() { return res; },
        setHeader() { return res; },
        status(code) { res.statusCode = code; return res; },
        json(body) { resolve({ status: res.statusCode, body }); return res; },
        end() { resolve({ status: res.statusCode }); return res; },
      };
      auth(req, res, () => resolve({ status: 200, sub: req.auth?.clientId }));
    });
    results.push(result);
  }
  console.log(JSON.stringify(results));
} else {
  console.error('usage: jwks.mjs keys ISSUER AUDIENCE KID... | verify JWKS_URL ISSUER AUDIENCE TOKEN...');
  process.exit(2);
}
