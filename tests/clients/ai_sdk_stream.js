// Calls route.js's POST handler the way Next.js does, with a Request, and reads the streamed
// Response body as a browser would:
//   MNEMO_BASE_URL=<mnemo base URL> node ai_sdk_stream.js <user id> <message>
// Prints {"pieces": [...]}: each text piece as it arrived.
import { POST } from "./route.js";

const [userId, prompt] = process.argv.slice(2);

const response = await POST(
  new Request("http://app.local/api/chat", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, userId }),
  }),
);
const decoder = new TextDecoder();
const pieces = [];
for await (const bytes of response.body) {
  pieces.push(decoder.decode(bytes, { stream: true }));
}
console.log(JSON.stringify({ status: response.status, pieces }));
