--! Previous: sha1:3c33e25cd52679f3ae14001f340ed22b039fcc5d
--! Hash: sha1:22df4f2cdcb3a40bcb13de17db04da03b310e79f
--! Message: Account lifecycle: password reset by emailed single-use token (hashed, 1 hour; logs out every session), changePassword and requestEmailChange ask the current password (new address confirmed by its own token), revokeSession, revokeOtherSessions, isCurrent, changeMemberRole (last owner never demoted; demotion and removal revoke the member's keys above their role)

-- Issue 14, the rest of the account lifecycle: password reset by an emailed single-use token, change
-- of password (asks the current one), change of email address (the new one confirmed by a token
-- sent to it), listing and ending one's own sessions, and role changes by owners and admins (the
-- last owner is never demoted or removed). Every token is kept as its SHA-256 only.

create table if not exists app_private.password_reset_tokens (
  user_id uuid primary key,
  email public.citext not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint password_reset_tokens_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint password_reset_tokens_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32)
);
create unique index if not exists password_reset_tokens_token_hash_idx on app_private.password_reset_tokens (token_hash);
comment on table app_private.password_reset_tokens is 'The current password reset token of each user who asked for one, as its SHA-256 only (the token itself is only in the email). Deleted when used, when the password is changed, or when the address changes; replaced when a new one is sent.';
comment on column app_private.password_reset_tokens.user_id is 'The user.';
comment on column app_private.password_reset_tokens.email is 'The address the token was sent to (the token stops working if the account address changes).';
comment on column app_private.password_reset_tokens.token_hash is 'SHA-256 of the token (sbr_ and 64 hex digits, 256 random bits).';
comment on column app_private.password_reset_tokens.expires_at is 'When the token stops working (1 hour after it was sent).';
comment on column app_private.password_reset_tokens.created_at is 'When the token was issued (at most one a minute per user).';
alter table app_private.password_reset_tokens enable row level security;
alter table app_private.password_reset_tokens force row level security;
drop policy if exists owner_all on app_private.password_reset_tokens;
create policy owner_all on app_private.password_reset_tokens for all to :DATABASE_OWNER using (true) with check (true);

create table if not exists app_private.email_change_requests (
  user_id uuid primary key,
  old_email public.citext not null,
  new_email public.citext not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint email_change_requests_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint email_change_requests_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32),
  constraint email_change_requests_new_email_must_differ_from_the_old check (new_email <> old_email)
);
create unique index if not exists email_change_requests_token_hash_idx on app_private.email_change_requests (token_hash);
comment on table app_private.email_change_requests is 'The pending change of login address of each user who asked for one, with the SHA-256 of the token sent to the new address. Deleted when confirmed or when the password is reset; replaced by a new request.';
comment on column app_private.email_change_requests.user_id is 'The user.';
comment on column app_private.email_change_requests.old_email is 'The address when the change was asked for (the token stops working if it changes meanwhile).';
comment on column app_private.email_change_requests.new_email is 'The address to change to; not checked against other accounts until it is confirmed (the answer would tell whether an account uses it).';
comment on column app_private.email_change_requests.token_hash is 'SHA-256 of the token (sbe_ and 64 hex digits, 256 random bits).';
comment on column app_private.email_change_requests.expires_at is 'When the token stops working (24 hours after it was sent).';
comment on column app_private.email_change_requests.created_at is 'When the change was asked for (at most one a minute per user).';
alter table app_private.email_change_requests enable row level security;
alter table app_private.email_change_requests force row level security;
drop policy if exists owner_all on app_private.email_change_requests;
create policy owner_all on app_private.email_change_requests for all to :DATABASE_OWNER using (true) with check (true);

-- Revoking the keys a user created (reset of an unproved account) looks them up by creator.
create index if not exists api_keys_created_by_idx on app_public.api_keys (created_by) where revoked_at is null;
comment on index app_public.api_keys_created_by_idx is 'The active keys a user created, in any tenant: reset_password revokes them when the account had never proved its address.';

comment on table app_public.memberships is 'Who belongs to which tenant, with which role. Changed only through register (the owner of a new business), accept_invitation, change_member_role and remove_member.';
comment on table app_public.user_sessions is 'Your login sessions (isCurrent marks the one making the request). The signed token carries the session id; a session stops working when it expires or is revoked: logout, revokeSession, revokeOtherSessions, a password change (the others) or reset (all).';
comment on column app_public.user_sessions.revoked_at is 'When the session was ended (logout, revokeSession, revokeOtherSessions, a password change or reset); null while active.';
comment on column app_public.api_keys.created_by is 'The member who created the key; null when created with another API key or when the creator has left. Removing the member, or demoting them below the key''s role, revokes the key.';

--! Included identity/send_account_notice.sql
create or replace function app_private.send_account_notice(user_id uuid, to_email text, subject text, body_text text) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
begin
  -- Account email, not a tenant's: no tenant_id, so no request can read it in the outbox.
  perform app_private.queue_email(null, send_account_notice.to_email, send_account_notice.subject,
    send_account_notice.body_text
      || E'\n\nIf this was not you, reset your password at once (requestPasswordReset) and review your sessions.\n',
    'transactional', from_name => 'Switchboard');
end;
$$;

comment on function app_private.send_account_notice(uuid, text, text, text) is 'Emails a user a notice about their account (password changed, email address changed or about to change) through the outbox, as an account email with no tenant so that no request can read it. The body ends with what to do if it was not them. user_id names whom it is about (for callers and readers); to_email is where it goes, which for an address change is the old address. No permission checks: callers check.';
--! EndIncluded identity/send_account_notice.sql
--! Included identity/issue_password_reset_token.sql
create or replace function app_private.issue_password_reset_token(user_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_token text := 'sbr_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
begin
  select u.* into v_user from app_public.users u where u.id = issue_password_reset_token.user_id;
  if not found then
    raise exception 'No such user' using errcode = 'P0002';
  end if;
  -- One token per user: a new one replaces the old, which stops working at once.
  insert into app_private.password_reset_tokens (user_id, email, token_hash, expires_at)
    values (v_user.id, v_user.email, public.digest(v_token, 'sha256'), pg_catalog.now() + interval '1 hour')
    on conflict (user_id) do update
      set email = excluded.email, token_hash = excluded.token_hash, expires_at = excluded.expires_at, created_at = pg_catalog.now();
  perform app_private.queue_email(null, v_user.email::text, 'Reset your Switchboard password',
    E'Someone asked to reset the password of the Switchboard account with this address. Your reset token:\n\n  '
      || v_token || E'\n\n'
      || E'Choose a new password with it (no login needed):\n\n'
      || '  mutation { resetPassword(input: { token: "' || v_token || E'", newPassword: "..." }) { result } }\n\n'
      || E'The token works once and expires in 1 hour. Resetting logs out every session of the account.\n'
      || E'If you did not ask for this, ignore this email: your password stays as it is.\n',
    'transactional', from_name => 'Switchboard');
end;
$$;

comment on function app_private.issue_password_reset_token(uuid) is 'Gives a user a new random password reset token (256 bits; only its SHA-256 is kept, in app_private.password_reset_tokens, replacing the previous one), valid 1 hour, and emails it to their address through the outbox (transactional, no tenant, so no request can read it). No permission checks: callers check. Errors: P0002 no such user.';
--! EndIncluded identity/issue_password_reset_token.sql
--! Included identity/request_password_reset.sql
create or replace function app_public.request_password_reset(email text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email public.citext := app_private.validate_email(request_password_reset.email);
  v_user_id uuid;
begin
  select u.id into v_user_id from app_public.users u where u.email = v_email;
  -- The same answer whether or not the address has an account, and whether or not an email goes out:
  -- at most one reset email a minute per account, so nobody can flood the mailbox of someone else.
  if v_user_id is not null and not exists (
    select 1 from app_private.password_reset_tokens t
    where t.user_id = v_user_id and t.created_at > pg_catalog.now() - interval '1 minute'
  ) then
    perform app_private.issue_password_reset_token(v_user_id);
  end if;
  return true;
end;
$$;

comment on function app_public.request_password_reset(text) is 'Emails a single-use password reset token (valid 1 hour) to the account with this address, if there is one (no login needed). Always answers true, so the answer never tells whether an account exists; at most one email a minute goes to an account, and requests are rate limited per client address and per address asked about (RATE_LIMITED). Errors: 22023 not an email address.';

grant execute on function app_public.request_password_reset(text) to :DATABASE_VISITOR;
--! EndIncluded identity/request_password_reset.sql
--! Included identity/reset_password.sql
create or replace function app_public.reset_password(token text, new_password text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_user_id uuid;
begin
  -- A weak password is refused before the token is looked at, so the token still works afterwards.
  perform app_private.validate_password(reset_password.new_password);
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if reset_password.token is not null and pg_catalog.length(reset_password.token) <= 200 then
    delete from app_private.password_reset_tokens t
    using app_public.users u
    where t.token_hash = public.digest(reset_password.token, 'sha256')
      and t.expires_at > pg_catalog.now()
      and u.id = t.user_id and u.email = t.email
    returning t.user_id into v_user_id;
  end if;
  if v_user_id is null then
    raise exception 'This password reset token is not valid: it may have expired or been used already' using errcode = 'P0002';
  end if;
  select u.* into v_user from app_public.users u where u.id = v_user_id for update;

  update app_private.user_secrets s set
    password_hash = public.crypt(reset_password.new_password, public.gen_salt('bf', 10)),
    password_changed_at = pg_catalog.now(),
    failed_login_attempts = 0,
    first_failed_login_at = null,
    locked_until = null
  where s.user_id = v_user.id;

  -- Whoever held a session (or knew the old password) is out: every session of the account ends.
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user.id and s.revoked_at is null;
  -- A pending change of address was asked for by whoever held the account before: it is dropped.
  delete from app_private.email_change_requests r where r.user_id = v_user.id;

  -- The token came to this address, so its owner has now proved it. If nobody had before, the account
  -- may have been registered by a stranger who never owned the address: the API keys made while it
  -- was unproved are revoked, so nothing that stranger set up keeps access.
  if v_user.email_verified_at is null then
    update app_public.users u set email_verified_at = pg_catalog.now() where u.id = v_user.id;
    delete from app_private.email_verification_tokens t where t.user_id = v_user.id;
    update app_public.api_keys k set revoked_at = pg_catalog.now()
      where k.created_by = v_user.id and k.revoked_at is null;
  end if;

  perform app_private.send_account_notice(v_user.id, v_user.email::text, 'Your Switchboard password was reset',
    E'The password of the Switchboard account with this address was reset with a token sent here, and every session of the account was logged out.');
  return true;
end;
$$;

comment on function app_public.reset_password(text, text) is 'Sets a new password with the token from the password reset email (no login needed). The token is used up, every session of the account is logged out, and a notice is emailed. Resetting proves the address: an account that had never verified it becomes verified, and the API keys it created before are revoked (a stranger who registered the address first keeps nothing). Rate limited per client address (RATE_LIMITED). Errors: 22023 weak password (at least 10 characters with a letter and a digit or symbol; the token still works); P0002 the token is unknown, expired or used (one error for all).';

grant execute on function app_public.reset_password(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/reset_password.sql
--! Included identity/require_current_password.sql
create or replace function app_private.require_current_password(password text, action text) returns app_public.users
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_hash text;
begin
  -- A logged-in person only: an API key acts for a tenant, not for an account.
  select u.* into v_user from app_public.users u where u.id = app_public.current_user_id() for update;
  if v_user.id is null then
    raise exception 'You must be logged in to %', require_current_password.action using errcode = '28000';
  end if;
  select s.password_hash into v_hash from app_private.user_secrets s where s.user_id = v_user.id;
  if require_current_password.password is null or pg_catalog.length(require_current_password.password) > 1000
     or v_hash is null or public.crypt(require_current_password.password, v_hash) <> v_hash then
    raise exception 'Your current password is not correct' using errcode = '28P01';
  end if;
  return v_user;
end;
$$;

comment on function app_private.require_current_password(text, text) is 'The logged-in user (their row locked), after checking that the given password is their current one: asked again before a change to the account, so a session left open is not enough. Errors: 28000 not logged in (API keys included: they belong to no account), with the action in the message; 28P01 the password is not correct.';
--! EndIncluded identity/require_current_password.sql
--! Included identity/change_password.sql
create or replace function app_public.change_password(current_password text, new_password text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users := app_private.require_current_password(change_password.current_password, 'change your password');
begin
  perform app_private.validate_password(change_password.new_password);
  if change_password.new_password = change_password.current_password then
    raise exception 'The new password must differ from the current one' using errcode = '22023';
  end if;
  update app_private.user_secrets s set
    password_hash = public.crypt(change_password.new_password, public.gen_salt('bf', 10)),
    password_changed_at = pg_catalog.now()
  where s.user_id = v_user.id;
  -- Every other session ends; the one making the change goes on.
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user.id and s.revoked_at is null and s.id is distinct from app_public.current_session_id();
  -- A reset token emailed earlier would undo the change: it stops working.
  delete from app_private.password_reset_tokens t where t.user_id = v_user.id;
  perform app_private.send_account_notice(v_user.id, v_user.email::text, 'Your Switchboard password was changed',
    E'The password of the Switchboard account with this address was changed, and every other session of the account was logged out.');
  return true;
end;
$$;

comment on function app_public.change_password(text, text) is 'Changes your password; asks for the current one. Your other sessions are logged out (this one goes on), a pending password reset token stops working, and a notice is emailed to your address. Logged-in users only (not API keys). Rate limited per client address and per account (RATE_LIMITED). Errors: 28000 not logged in; 28P01 the current password is not correct; 22023 weak new password (at least 10 characters with a letter and a digit or symbol) or the same as the current one.';

grant execute on function app_public.change_password(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/change_password.sql
--! Included identity/request_email_change.sql
create or replace function app_public.request_email_change(new_email text, password text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users := app_private.require_current_password(request_email_change.password, 'change your email address');
  v_email public.citext := app_private.validate_email(request_email_change.new_email);
  v_token text := 'sbe_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
begin
  if v_email = v_user.email then
    raise exception 'That is already your email address' using errcode = '22023';
  end if;
  if exists (
    select 1 from app_private.email_change_requests r
    where r.user_id = v_user.id and r.created_at > pg_catalog.now() - interval '1 minute'
  ) then
    raise exception 'A confirmation email was sent less than a minute ago: wait a minute before asking again' using errcode = '55000';
  end if;
  -- Whether another account uses the new address is not checked here (the answer would tell):
  -- only the owner of that mailbox gets the token, and confirming tells them.
  insert into app_private.email_change_requests (user_id, old_email, new_email, token_hash, expires_at)
    values (v_user.id, v_user.email, v_email, public.digest(v_token, 'sha256'), pg_catalog.now() + interval '24 hours')
    on conflict (user_id) do update
      set old_email = excluded.old_email, new_email = excluded.new_email, token_hash = excluded.token_hash,
          expires_at = excluded.expires_at, created_at = pg_catalog.now();
  perform app_private.queue_email(null, v_email::text, 'Confirm your new email address for Switchboard',
    E'Confirm that this address is yours to make it the login of your Switchboard account. Your token:\n\n  '
      || v_token || E'\n\n'
      || E'Send it to Switchboard (no login needed):\n\n'
      || '  mutation { confirmEmailChange(input: { token: "' || v_token || E'" }) { result } }\n\n'
      || E'The token works once and expires in 24 hours.\n'
      || E'If you did not ask for this, ignore this email: nothing changes.\n',
    'transactional', from_name => 'Switchboard');
  perform app_private.send_account_notice(v_user.id, v_user.email::text, 'A change of your Switchboard email address was requested',
    'Someone logged in to your Switchboard account asked to change its address to ' || v_email::text
      || E'. Nothing changes until the new address is confirmed with the token sent there.');
  return true;
end;
$$;

comment on function app_public.request_email_change(text, text) is 'Starts changing your login email address; asks for your current password. A single-use token (valid 24 hours) goes to the new address, and a notice to the current one; nothing changes until the token is sent back (confirmEmailChange), so the new address is verified by then. A new request replaces the previous one; at most one a minute. Logged-in users only (not API keys). Rate limited per client address and per account (RATE_LIMITED). Errors: 28000 not logged in; 28P01 the password is not correct; 22023 not an email address, or already yours; 55000 asked less than a minute ago.';

grant execute on function app_public.request_email_change(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/request_email_change.sql
--! Included identity/confirm_email_change.sql
create or replace function app_public.confirm_email_change(token text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_request app_private.email_change_requests;
begin
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if confirm_email_change.token is not null and pg_catalog.length(confirm_email_change.token) <= 200 then
    delete from app_private.email_change_requests r
    using app_public.users u
    where r.token_hash = public.digest(confirm_email_change.token, 'sha256')
      and r.expires_at > pg_catalog.now()
      and u.id = r.user_id and u.email = r.old_email
    returning r.* into v_request;
  end if;
  if v_request.user_id is null then
    raise exception 'This email change token is not valid: it may have expired or been used already' using errcode = 'P0002';
  end if;
  begin
    update app_public.users u set email = v_request.new_email, email_verified_at = pg_catalog.now()
      where u.id = v_request.user_id;
  exception when unique_violation then
    raise exception 'Another account already uses this email address: log in to that account, or ask for a change to another address'
      using errcode = '23505';
  end;
  -- The profiles that showed the old address show the new one.
  update app_public.user_profiles p set email = v_request.new_email
    where p.user_id = v_request.user_id and p.email = v_request.old_email;
  -- Tokens sent to the old address stop working.
  delete from app_private.email_verification_tokens t where t.user_id = v_request.user_id;
  delete from app_private.password_reset_tokens t where t.user_id = v_request.user_id;
  perform app_private.send_account_notice(v_request.user_id, v_request.old_email::text, 'Your Switchboard email address was changed',
    'The login of the Switchboard account that used this address is now ' || v_request.new_email::text || '.');
  return true;
end;
$$;

comment on function app_public.confirm_email_change(text) is 'Finishes a change of login email address with the token sent to the new address (no login needed): the account then logs in with the new address, which counts as verified, tokens sent to the old address stop working, and a notice goes to the old address. The token is used up. Rate limited per client address (RATE_LIMITED). Errors: P0002 the token is unknown, expired or used, or the account changed address since (one error for all); 23505 another account took the address meanwhile (nothing changes).';

grant execute on function app_public.confirm_email_change(text) to :DATABASE_VISITOR;
--! EndIncluded identity/confirm_email_change.sql
--! Included identity/revoke_session.sql
create or replace function app_public.revoke_session(session_id uuid) returns app_public.user_sessions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user_id uuid := app_public.current_user_id();
  v_session app_public.user_sessions;
begin
  if v_user_id is null then
    raise exception 'You must be logged in to end a session' using errcode = '28000';
  end if;
  -- Only your own sessions: the id of anyone else is answered exactly like an unknown id.
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.id = revoke_session.session_id and s.user_id = v_user_id and s.revoked_at is null
      and s.expires_at > pg_catalog.now()
    returning s.* into v_session;
  if v_session.id is null then
    raise exception 'You have no active session with that id' using errcode = 'P0002';
  end if;
  return v_session;
end;
$$;

comment on function app_public.revoke_session(uuid) is 'Ends one of your sessions (listed by allUserSessions, e.g. a phone you lost): its token stops working at once. Ending the current one is logging out. Logged-in users only. Errors: 28000 not logged in; P0002 no active session of yours has that id (also for the sessions of others).';

grant execute on function app_public.revoke_session(uuid) to :DATABASE_VISITOR;
--! EndIncluded identity/revoke_session.sql
--! Included identity/revoke_other_sessions.sql
create or replace function app_public.revoke_other_sessions() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid := app_public.current_user_id();
  v_count integer;
begin
  if v_user_id is null then
    raise exception 'You must be logged in to end your other sessions' using errcode = '28000';
  end if;
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user_id and s.revoked_at is null and s.expires_at > pg_catalog.now()
      and s.id <> app_public.current_session_id();
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

comment on function app_public.revoke_other_sessions() is 'Ends every one of your sessions except the one making this request ("log out everywhere else"); returns how many were ended. Logged-in users only. Errors: 28000 not logged in.';

grant execute on function app_public.revoke_other_sessions() to :DATABASE_VISITOR;
--! EndIncluded identity/revoke_other_sessions.sql
--! Included identity/user_sessions_is_current.sql
create or replace function app_public.user_sessions_is_current(session app_public.user_sessions) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select session.id = app_public.current_session_id();
$$;

comment on function app_public.user_sessions_is_current(app_public.user_sessions) is 'True for the session making this request.';

grant execute on function app_public.user_sessions_is_current(app_public.user_sessions) to :DATABASE_VISITOR;
--! EndIncluded identity/user_sessions_is_current.sql
--! Included identity/change_member_role.sql
create or replace function app_public.change_member_role(user_id uuid, role text) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'change roles');
  v_role text := pg_catalog.btrim(change_member_role.role);
  v_target app_public.memberships;
begin
  -- A person decides who holds power, not a key that might have leaked.
  if app_public.current_user_id() is null then
    raise exception 'Roles can only be changed by a member who is logged in, not with an API key' using errcode = '42501';
  end if;
  if v_role is null or v_role not in ('owner', 'admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'': use owner, admin, manager or agent', coalesce(v_role, '') using errcode = '22023';
  end if;
  -- Serialise role changes and removals per tenant (remove_member takes the same lock), so two
  -- owners demoting each other at once cannot leave the tenant without one.
  perform 1 from app_public.tenants t where t.id = v_tenant_id for no key update;
  -- Checked again now that the lock is held: the caller may have been demoted while waiting.
  perform app_private.require_tenant_role('admin', 'change roles');
  select m.* into v_target
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = change_member_role.user_id
  for update;
  if v_target.id is null then
    raise exception 'That user is not a member of this tenant' using errcode = 'P0002';
  end if;
  if v_target.role = v_role then
    return v_target;
  end if;
  if (v_target.role = 'owner' or v_role = 'owner') and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can make someone an owner or change the role of an owner' using errcode = '42501';
  end if;
  if v_target.role = 'owner' and (
    select pg_catalog.count(*) from app_public.memberships m where m.tenant_id = v_tenant_id and m.role = 'owner'
  ) <= 1 then
    raise exception 'The last owner cannot be demoted: make someone else an owner first' using errcode = '42501';
  end if;
  update app_public.memberships m set role = v_role where m.id = v_target.id returning m.* into v_target;
  -- The API keys this member created with more power than the new role stop working: the member
  -- may still hold their secrets.
  update app_public.api_keys k set revoked_at = pg_catalog.now()
    where k.tenant_id = v_tenant_id and k.created_by = v_target.user_id and k.revoked_at is null
      and pg_catalog.array_position(array['agent', 'manager', 'admin', 'owner']::text[], k.role)
        > pg_catalog.array_position(array['agent', 'manager', 'admin', 'owner']::text[], v_role);
  return v_target;
end;
$$;

comment on function app_public.change_member_role(uuid, text) is 'Changes the role of a member of the current tenant; it applies to their very next request. Owners and admins, logged in (not with an API key); only owners can make someone an owner or change the role of an owner, and the last owner cannot be demoted. Setting the role a member already has changes nothing. On a demotion, the API keys the member created with a role above the new one are revoked (they may still hold the secrets). Errors: 22023 unknown role; 42501 not allowed, or the last owner; P0002 not a member of this tenant.';

grant execute on function app_public.change_member_role(uuid, text) to :DATABASE_VISITOR;
--! EndIncluded identity/change_member_role.sql
--! Included identity/remove_member.sql
create or replace function app_public.remove_member(user_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'remove members');
  v_target app_public.memberships;
begin
  -- Serialise membership removals and role changes per tenant so two owners cannot remove each other at once.
  perform 1 from app_public.tenants t where t.id = v_tenant_id for no key update;
  -- Checked again now that the lock is held: the caller may have been demoted while waiting.
  perform app_private.require_tenant_role('admin', 'remove members');
  select m.* into v_target
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = remove_member.user_id;
  if v_target.id is null then
    raise exception 'That user is not a member of this tenant' using errcode = 'P0002';
  end if;
  if v_target.role = 'owner' then
    if not app_hidden.current_user_has_role('owner') then
      raise exception 'Only owners can remove owners' using errcode = '42501';
    end if;
    if (select pg_catalog.count(*) from app_public.memberships m where m.tenant_id = v_tenant_id and m.role = 'owner') <= 1 then
      raise exception 'The last owner cannot be removed: make someone else an owner first' using errcode = '42501';
    end if;
  end if;
  -- The API keys the member created stop working: they may still hold the secrets. (Deleting the
  -- membership sets api_keys.created_by to null, so this comes first.)
  update app_public.api_keys k set revoked_at = pg_catalog.now()
    where k.tenant_id = v_tenant_id and k.created_by = v_target.user_id and k.revoked_at is null;
  delete from app_public.memberships m where m.id = v_target.id;
  return true;
end;
$$;

comment on function app_public.remove_member(uuid) is 'Removes a member from the current tenant (their profile goes too; their next request no longer sees the tenant) and revokes the API keys they created (they may still hold the secrets). Owners and admins only; only owners can remove owners, and the last owner cannot be removed. Errors: 42501 not allowed, or the last owner; P0002 not a member.';

grant execute on function app_public.remove_member(uuid) to :DATABASE_VISITOR;
--! EndIncluded identity/remove_member.sql
