-- Runs as a superuser whenever the database is (re)created, before any migration.
-- Placeholders are substituted by graphile-migrate (and src/db/bootstrap.ts).
begin;

grant connect on database :DATABASE_NAME to :DATABASE_OWNER;
grant connect on database :DATABASE_NAME to :DATABASE_AUTHENTICATOR;
grant all on database :DATABASE_NAME to :DATABASE_OWNER;

-- Extensions live in public; our functions schema-qualify them (public.crypt, public.digest, ...).
create extension if not exists citext with schema public;
create extension if not exists pgcrypto with schema public;
create extension if not exists pg_trgm with schema public;
create extension if not exists btree_gist with schema public;
-- btree_gin: GIN indexes led by tenant_id (the trigram search indexes of leads).
create extension if not exists btree_gin with schema public;

-- Nobody may create objects in public; our roles may use what is there (extension types and functions).
revoke all on schema public from public;
grant usage on schema public to :DATABASE_OWNER, :DATABASE_AUTHENTICATOR, :DATABASE_VISITOR;

-- Functions the owner creates are not executable by PUBLIC: each is granted explicitly.
-- (Done after the extensions, so extension functions keep their usual privileges.)
alter default privileges for role :DATABASE_OWNER revoke execute on functions from public;

-- The API's pool logs in as the authenticator and switches to the visitor per request.
-- (The bootstrap also does this; repeating it is harmless.)
grant :DATABASE_VISITOR to :DATABASE_AUTHENTICATOR;

commit;
