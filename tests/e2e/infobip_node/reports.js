// Reads reports or logs with Infobip's Node SDK from a local Postern; prints what the SDK
// returned as JSON.
// Usage: node reports.js BASE_URL AUTH_JSON report|log FILTER_JSON
// AUTH_JSON: {"apiKey": "..."} or {"username": "...", "password": "..."}.
const { Infobip, AuthType } = require('@infobip-api/sdk');

async function main() {
  const [baseUrl, authJson, what, filterJson] = process.argv.slice(2);
  const auth = JSON.parse(authJson);
  const client = new Infobip({
    baseUrl,
    ...(auth.apiKey
      ? { apiKey: auth.apiKey, authType: AuthType.ApiKey }
      : { username: auth.username, password: auth.password, authType: AuthType.Basic }),
  });
  const result = await client.channels.email[what].get(JSON.parse(filterJson));
  if (result instanceof Error) {
    const response = result.response || {};
    console.log(
      JSON.stringify({ error: true, message: String(result), status: response.status, data: response.data })
    );
  } else {
    console.log(JSON.stringify({ error: false, status: result.status, data: result.data }));
  }
}

main().catch((err) => {
  console.log(JSON.stringify({ thrown: String(err) }));
  process.exit(1);
});
