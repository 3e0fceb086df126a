// The one way the console talks to Postern: public /api.php commands, the session in the body.

const SESSION = "postern.session";
const USER = "postern.user";
const ENDPOINT = new URL("../api.php", document.baseURI).href;

export class ApiError extends Error {
  constructor(command, code, text) {
    super(text);
    this.command = command;
    this.code = code;
  }
}

export const session = {
  get id() {
    return sessionStorage.getItem(SESSION);
  },
  get user() {
    const raw = sessionStorage.getItem(USER);
    return raw ? JSON.parse(raw) : null;
  },
  start(id, user) {
    sessionStorage.setItem(SESSION, id);
    sessionStorage.setItem(USER, JSON.stringify(user));
  },
  end() {
    sessionStorage.removeItem(SESSION);
    sessionStorage.removeItem(USER);
  },
};

/** Run ``command`` with ``params``; the answer's fields, or an ApiError with its code and text. */
export async function call(command, params = {}) {
  const body = { Command: command, ...params };
  const id = session.id;
  if (id && command !== "User.Login") body.SessionID = id;
  let resp;
  try {
    resp = await fetch(ENDPOINT, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (exc) {
    throw new ApiError(command, 0, `Postern cannot be reached (${exc.message})`);
  }
  let data;
  try {
    data = await resp.json();
  } catch {
    throw new ApiError(command, resp.status, `HTTP ${resp.status} from ${command}`);
  }
  if (!data.Success) {
    const code = Array.isArray(data.ErrorCode) ? data.ErrorCode.join(", ") : data.ErrorCode;
    const text = data.ErrorText || data.ErrorMessage || `Error ${code}`;
    if (data.ErrorCode === 99998 && command !== "User.Login") {
      session.end();
      window.dispatchEvent(new CustomEvent("postern:logout"));
    }
    throw new ApiError(command, code, text);
  }
  return data;
}
