// The IntegrationService client, over gRPC-Web.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { IntegrationService } from "./gen/centralauth/integration/v1/integration_pb";

export type IntegrationClient = Client<typeof IntegrationService>;

/**
 * A client for the service at `baseUrl`. The token lives only in this
 * closure: it is sent as `authorization: Bearer <token>` on every call and
 * is never written anywhere else.
 */
export function connect(baseUrl: string, token: string): IntegrationClient {
  const auth: Interceptor = (next) => (req) => {
    if (token !== "") {
      req.header.set("authorization", `Bearer ${token}`);
    }
    return next(req);
  };
  const transport = createGrpcWebTransport({
    baseUrl: baseUrl.replace(/\/+$/, ""),
    interceptors: [auth],
    // Never let the browser attach cookies or cached credentials.
    fetch: (input, init) => globalThis.fetch(input, { ...init, credentials: "omit", cache: "no-store" }),
  });
  return createClient(IntegrationService, transport);
}

/** The gRPC status name of a code: `Code.FailedPrecondition` is `FAILED_PRECONDITION`. */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** What an alert shows for a failed call: the status name and the service's message. */
export function describeError(err: unknown): { code: Code; text: string } {
  const e = ConnectError.from(err);
  let text = `${codeName(e.code)}: ${e.rawMessage}`;
  if (e.code === Code.Unknown && e.cause instanceof TypeError) {
    // fetch() itself failed: no answer, or one the browser may not read.
    text +=
      ` (no answer the page may read: check the service URL, and that the service runs with ` +
      `--grpc-web --cors-allow-origin ${location.origin})`;
  }
  return { code: e.code, text };
}
