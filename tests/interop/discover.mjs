// MCP client discovery against a running gateway, with the official MCP
// TypeScript SDK (@modelcontextprotocol/sdk, installed by .ci/install-deps.sh
// with `npm ci` in this folder). Driven by tests/interop.rs.
//
// Usage: node tests/interop/discover.mjs <mcp-server-url> <expected-issuer>
//
// Does what an MCP client does before its first authorization request:
//   1. discoverOAuthProtectedResourceMetadata(<mcp-server-url>)   (RFC 9728)
//   2. discoverAuthorizationServerMetadata(authorization_servers[0])
//      (RFC 8414, OpenID Connect Discovery fallback)
//   3. discoverOAuthServerInfo(<mcp-server-url>), the SDK's one-call form
// and checks what the SDK got: `resource` is the server URL (RFC 9728 §3.3,
// and the SDK's own checkResourceAllowed), the first authorization server is
// the expected issuer, and the metadata's `issuer` is identical to the URL it
// was discovered from (RFC 8414 §3.3), with S256 PKCE advertised.
// Prints one JSON line with the results and every URL the SDK fetched;
// exits 1 with a message on stderr when anything fails.

import {
  discoverOAuthProtectedResourceMetadata,
  discoverAuthorizationServerMetadata,
  discoverOAuthServerInfo,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { checkResourceAllowed } from '@modelcontextprotocol/sdk/shared/auth-utils.js';

function fail(message) {
  process.stderr.write(`interop failure: ${message}\n`);
  process.exit(1);
}

const [serverUrl, expectedIssuer] = process.argv.slice(2);
if (!serverUrl || !expectedIssuer) {
  fail('usage: node discover.mjs <mcp-server-url> <expected-issuer>');
}

const requests = [];
const recordingFetch = async (url, init) => {
  const response = await fetch(url, init);
  requests.push({ url: String(url), status: response.status });
  return response;
};

try {
  const resourceMetadata = await discoverOAuthProtectedResourceMetadata(serverUrl, {}, recordingFetch);
  if (resourceMetadata.resource !== serverUrl) {
    fail(`resource is ${resourceMetadata.resource}, expected ${serverUrl} (RFC 9728 §3.3)`);
  }
  if (!checkResourceAllowed({ requestedResource: serverUrl, configuredResource: resourceMetadata.resource })) {
    fail(`the SDK's checkResourceAllowed refuses ${resourceMetadata.resource} for ${serverUrl}`);
  }
  const servers = resourceMetadata.authorization_servers ?? [];
  if (servers[0] !== expectedIssuer) {
    fail(`authorization_servers is ${JSON.stringify(servers)}, expected ${expectedIssuer} first`);
  }

  const metadata = await discoverAuthorizationServerMetadata(servers[0], { fetchFn: recordingFetch });
  if (!metadata) {
    fail(`discoverAuthorizationServerMetadata found nothing for ${servers[0]}`);
  }
  if (metadata.issuer !== servers[0]) {
    fail(`issuer is ${metadata.issuer}, discovered from ${servers[0]} (RFC 8414 §3.3)`);
  }
  if (!(metadata.code_challenge_methods_supported ?? []).includes('S256')) {
    fail('code_challenge_methods_supported lacks S256');
  }

  const info = await discoverOAuthServerInfo(serverUrl, { fetchFn: recordingFetch });
  if (info.authorizationServerUrl !== expectedIssuer || info.authorizationServerMetadata?.issuer !== expectedIssuer) {
    fail(`discoverOAuthServerInfo gave ${JSON.stringify(info)}`);
  }

  process.stdout.write(
    JSON.stringify({
      ok: true,
      resource: resourceMetadata.resource,
      authorization_servers: servers,
      issuer: metadata.issuer,
      token_endpoint: metadata.token_endpoint,
      requests,
    }) + '\n',
  );
} catch (error) {
  fail(`${error?.stack ?? error}\nrequests so far: ${JSON.stringify(requests)}`);
}
