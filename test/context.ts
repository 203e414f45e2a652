/** What the global setup hands to every test file (through vitest's provide/inject). */
export interface TestDatabase {
  /** Superuser URL to the server's `postgres` database. */
  serverRootUrl: string;
  /** Superuser URL to the test database. */
  rootUrl: string;
  ownerUrl: string;
  authUrl: string;
  databaseName: string;
  roles: { owner: string; authenticator: string; visitor: string };
  embedded: boolean;
}

export const testRoles = {
  owner: "switchboard_test_owner",
  authenticator: "switchboard_test_authenticator",
  visitor: "switchboard_test_visitor",
};

declare module "vitest" {
  export interface ProvidedContext {
    db: TestDatabase;
  }
}
