// Sends with Infobip's Node SDK to a local Postern; prints what the SDK returned as JSON.
// Usage: node send.js BASE_URL AUTH_JSON EMAIL_JSON [ATTACHMENT_NAME ATTACHMENT_BASE64]
// AUTH_JSON: {"apiKey": "..."} or {"username": "...", "password": "..."}.
const { Infobip, AuthType } = require('@infobip-api/sdk');

async function main() {
  const [baseUrl, authJson, emailJson, attachmentName, attachmentBase64] = process.argv.slice(2);
  const auth = JSON.parse(authJson);
  const client = new Infobip({
    baseUrl,
    ...(auth.apiKey
      ? { apiKey: auth.apiKey, authType: AuthType.ApiKey }
      : { username: auth.username, password: auth.password, authType: AuthType.Basic }),
  });
  const email = JSON.parse(emailJson);
  if (attachmentName) {
    email.attachment = [{ name: attachmentName, data: Buffer.from(attachmentBase64, 'base64') }];
  }
  const result = await client.channels.email.send(email);
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
