--! Previous: sha1:e81304108dd855452fd3314ce80195860d3574ea
--! Hash: sha1:1f37615b7e67c34cacf5db686ea0c01fb2348cf3
--! Message: Invitations by token and email verification: inviteMember only creates a pending invitation and emails a single-use expiring token (hashed at rest), the same answer whether or not the address has an account; acceptInvitation needs the invited, verified account; owners and admins list, resend and revoke; register no longer joins invitations and emails a verification token; verifyEmail and resendVerificationEmail; existing users verified; account emails belong to no tenant

-- Issue 14: invitations are accepted with an emailed token, and accounts verify their email address.
-- Before: whoever registered an invited address first became a member, and an existing user invited
-- by anyone became a member at once.

-- Accounts verify their address. Accounts created before verification existed are treated as verified
-- (they were made by people the tenants already work with; nothing could be verified before): the
-- backfill runs only when the column is first added, so re-running this file verifies nobody new.
do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_attribute a
    where a.attrelid = 'app_public.users'::regclass and a.attname = 'email_verified_at' and not a.attisdropped
  ) then
    alter table app_public.users add column email_verified_at timestamptz;
    update app_public.users u set email_verified_at = u.created_at;
  end if;
end
$$;
comment on column app_public.users.email_verified_at is 'When the user proved they own their email address (verifyEmail); null until then. Invitations can only be accepted by a verified account.';

-- Account emails (verification, invitations) belong to no tenant: tenant_id null, which no request's
-- policy matches, so the tokens in their bodies are readable by the owner role only.
alter table app_public.email_messages alter column tenant_id drop not null;
comment on column app_public.email_messages.tenant_id is 'The business the email is sent for; null for Switchboard''s own account emails (verification, invitations), which no request can read.';

-- Invitations: pending until accepted with the emailed token, or revoked.
alter table app_public.invitations add column if not exists expires_at timestamptz;
alter table app_public.invitations add column if not exists revoked_at timestamptz;
alter table app_public.invitations add column if not exists last_sent_at timestamptz;
alter table app_public.invitations add column if not exists send_count integer not null default 0;
alter table if exists app_private.invitation_tokens drop constraint if exists invitation_tokens_invitation_must_exist;
alter table app_public.invitations drop constraint if exists invitations_id_must_be_unique_per_tenant;
alter table app_public.invitations drop constraint if exists invitations_send_count_must_not_be_negative;
alter table app_public.invitations drop constraint if exists invitations_must_not_be_both_accepted_and_revoked;
alter table app_public.invitations add constraint invitations_id_must_be_unique_per_tenant unique (tenant_id, id);
alter table app_public.invitations add constraint invitations_send_count_must_not_be_negative check (send_count >= 0);
alter table app_public.invitations add constraint invitations_must_not_be_both_accepted_and_revoked
  check (accepted_at is null or revoked_at is null);
drop index if exists app_public.invitations_pending_email_must_be_unique_per_tenant;
create unique index invitations_pending_email_must_be_unique_per_tenant
  on app_public.invitations (tenant_id, email) where accepted_at is null and revoked_at is null;

comment on table app_public.invitations is 'An invitation to join a tenant, sent to an email address. It stays pending until the person, logged in with that address and verified, accepts it with the token emailed to them (acceptInvitation); owners and admins list (pendingInvitations), resend and revoke it. Only owners and admins can read invitations.';
comment on column app_public.invitations.accepted_at is 'When the invitation was accepted (acceptInvitation); null while pending.';
comment on column app_public.invitations.expires_at is 'When the current token stops working (7 days after it was sent, on the tenant''s clock); resendInvitation sends a new one.';
comment on column app_public.invitations.revoked_at is 'When an owner or admin revoked the invitation; its token no longer works.';
comment on column app_public.invitations.last_sent_at is 'When the invitation was last emailed, on the tenant''s clock (at most once a minute).';
comment on column app_public.invitations.send_count is 'How many times the invitation has been emailed.';

drop policy if exists select_current_tenant on app_public.invitations;
create policy select_current_tenant on app_public.invitations for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));

create table if not exists app_private.invitation_tokens (
  tenant_id uuid not null,
  invitation_id uuid not null,
  token_hash bytea not null,
  created_at timestamptz not null default now(),
  constraint invitation_tokens_pkey primary key (tenant_id, invitation_id),
  constraint invitation_tokens_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32)
);
alter table app_private.invitation_tokens add constraint invitation_tokens_invitation_must_exist
  foreign key (tenant_id, invitation_id) references app_public.invitations (tenant_id, id) on delete cascade;
create index if not exists invitation_tokens_token_hash_idx on app_private.invitation_tokens (token_hash);
comment on table app_private.invitation_tokens is 'The current token of each pending invitation, as its SHA-256 only (the token itself is only in the email). Deleted when the invitation is accepted or revoked; replaced when it is resent.';
comment on column app_private.invitation_tokens.tenant_id is 'The invitation''s tenant.';
comment on column app_private.invitation_tokens.invitation_id is 'The invitation.';
comment on column app_private.invitation_tokens.token_hash is 'SHA-256 of the token (sbi_ and 64 hex digits, 256 random bits).';
comment on column app_private.invitation_tokens.created_at is 'When the token was issued.';
alter table app_private.invitation_tokens enable row level security;
alter table app_private.invitation_tokens force row level security;
drop policy if exists owner_all on app_private.invitation_tokens;
create policy owner_all on app_private.invitation_tokens for all to :DATABASE_OWNER using (true) with check (true);

create table if not exists app_private.email_verification_tokens (
  user_id uuid primary key,
  email public.citext not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint email_verification_tokens_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint email_verification_tokens_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32)
);
create index if not exists email_verification_tokens_token_hash_idx on app_private.email_verification_tokens (token_hash);
comment on table app_private.email_verification_tokens is 'The current email verification token of each unverified user, as its SHA-256 only (the token itself is only in the email). Deleted when used; replaced when a new one is sent.';
comment on column app_private.email_verification_tokens.user_id is 'The user.';
comment on column app_private.email_verification_tokens.email is 'The address the token proves (a token stops working if the address changes).';
comment on column app_private.email_verification_tokens.token_hash is 'SHA-256 of the token (sbv_ and 64 hex digits, 256 random bits).';
comment on column app_private.email_verification_tokens.expires_at is 'When the token stops working (24 hours after it was sent).';
comment on column app_private.email_verification_tokens.created_at is 'When the token was issued.';
alter table app_private.email_verification_tokens enable row level security;
alter table app_private.email_verification_tokens force row level security;
drop policy if exists owner_all on app_private.email_verification_tokens;
create policy owner_all on app_private.email_verification_tokens for all to :DATABASE_OWNER using (true) with check (true);

comment on table app_public.memberships is 'Who belongs to which tenant, with which role. Changed only through register (the owner of a new business), accept_invitation and remove_member.';

comment on type app_public.invite_result is 'The outcome of invite_member: the pending invitation (invitation_id). The same whether or not the address has an account; membership_id and user_id are always null (kept so existing clients keep working).';
comment on column app_public.invite_result.membership_id is 'Always null: nobody joins before accepting the invitation.';
comment on column app_public.invite_result.invitation_id is 'The pending invitation.';
comment on column app_public.invite_result.user_id is 'Always null: the answer does not say whether the address has an account.';
comment on column app_public.invite_result.role is 'The role the person will have in the tenant once they accept.';

--! Included identity/issue_invitation_token.sql
create or replace function app_private.issue_invitation_token(invitation_id uuid) returns app_public.invitations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_invitation app_public.invitations;
  v_token text := 'sbi_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
  v_business text;
  v_inviter text;
begin
  select i.* into v_invitation from app_public.invitations i
  where i.id = issue_invitation_token.invitation_id and i.accepted_at is null and i.revoked_at is null
  for update;
  if not found then
    raise exception 'No pending invitation with that id' using errcode = 'P0002';
  end if;
  if v_invitation.last_sent_at > app_hidden.clock_now(v_invitation.tenant_id) - interval '1 minute' then
    raise exception 'An invitation was emailed to that address less than a minute ago: wait a minute before sending it again'
      using errcode = '55000';
  end if;
  update app_public.invitations i
    set expires_at = app_hidden.clock_now(i.tenant_id) + interval '7 days',
        last_sent_at = app_hidden.clock_now(i.tenant_id),
        send_count = i.send_count + 1
    where i.id = v_invitation.id
    returning i.* into v_invitation;
  -- One token per invitation: a new one replaces the old, which stops working at once.
  insert into app_private.invitation_tokens (tenant_id, invitation_id, token_hash)
    values (v_invitation.tenant_id, v_invitation.id, public.digest(v_token, 'sha256'))
    on conflict (tenant_id, invitation_id) do update set token_hash = excluded.token_hash, created_at = pg_catalog.now();

  select pg_catalog.left(pg_catalog.regexp_replace(t.business_name, '[\r\n]+', ' ', 'g'), 200) into v_business
  from app_public.tenants t where t.id = v_invitation.tenant_id;
  select u.email::text into v_inviter from app_public.users u where u.id = v_invitation.invited_by;
  -- Account email, not the tenant's: no tenant_id, so no request can read the token in the outbox.
  perform app_private.queue_email(null, v_invitation.email::text,
    'You are invited to join ' || v_business || ' on Switchboard',
    coalesce(v_inviter, 'A member of ' || v_business) || ' invited you to join ' || v_business
      || ' on Switchboard as ' || v_invitation.role || E'.\n\n'
      || E'Your invitation token:\n\n  ' || v_token || E'\n\n'
      || 'To accept, log in to Switchboard with this email address (' || v_invitation.email
      || E'), or register with it and confirm it from the verification email first, then send:\n\n'
      || '  mutation { acceptInvitation(input: { token: "' || v_token || E'" }) { result } }\n\n'
      || 'The token works once and expires on '
      || pg_catalog.to_char(v_invitation.expires_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI') || E' UTC.\n'
      || E'If you did not expect this invitation, ignore this email: nothing happens unless you accept it.\n',
    'transactional', from_name => v_business);
  return v_invitation;
end;
$$;

comment on function app_private.issue_invitation_token(uuid) is 'Gives a pending invitation a new random token (256 bits; only its SHA-256 is kept, in app_private.invitation_tokens, replacing the previous one), valid 7 days on the tenant''s clock, and emails it to the invited address through the outbox (transactional, with no tenant so that no request can read it). At most once a minute per invitation (on the tenant''s clock). No permission checks: callers check. Errors: P0002 no pending invitation; 55000 sent less than a minute ago.';
--! EndIncluded identity/issue_invitation_token.sql
--! Included identity/send_verification_email.sql
create or replace function app_private.send_verification_email(user_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_token text := 'sbv_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
begin
  select u.* into v_user from app_public.users u where u.id = send_verification_email.user_id;
  if not found then
    raise exception 'No such user' using errcode = 'P0002';
  end if;
  -- One token per user: a new one replaces the old, which stops working at once.
  insert into app_private.email_verification_tokens (user_id, email, token_hash, expires_at)
    values (v_user.id, v_user.email, public.digest(v_token, 'sha256'), pg_catalog.now() + interval '24 hours')
    on conflict (user_id) do update
      set email = excluded.email, token_hash = excluded.token_hash, expires_at = excluded.expires_at, created_at = pg_catalog.now();
  -- Account email, not a tenant's: no tenant_id, so no request can read the token in the outbox.
  perform app_private.queue_email(null, v_user.email::text, 'Confirm your email address for Switchboard',
    E'Confirm that this address is yours. Your verification token:\n\n  ' || v_token || E'\n\n'
      || E'Send it to Switchboard (no login needed):\n\n'
      || '  mutation { verifyEmail(input: { token: "' || v_token || E'" }) { result } }\n\n'
      || E'The token works once and expires in 24 hours.\n'
      || E'If you did not create a Switchboard account with this address, ignore this email.\n',
    'transactional', from_name => 'Switchboard');
end;
$$;

comment on function app_private.send_verification_email(uuid) is 'Gives a user a new random email verification token (256 bits; only its SHA-256 is kept, in app_private.email_verification_tokens, replacing the previous one), valid 24 hours, and emails it to their address through the outbox (transactional, with no tenant so that no request can read it). No permission checks: callers check. Errors: P0002 no such user.';
--! EndIncluded identity/send_verification_email.sql
--! Included identity/invite_member.sql
create or replace function app_public.invite_member(email text, role text default 'agent') returns app_public.invite_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'invite members');
  v_email public.citext := app_private.validate_email(invite_member.email);
  v_role text := coalesce(nullif(pg_catalog.btrim(invite_member.role), ''), 'agent');
  v_inviter uuid := app_public.current_user_id();
  v_invitation app_public.invitations;
begin
  if v_role not in ('owner', 'admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'': use owner, admin, manager or agent', v_role using errcode = '22023';
  end if;
  if v_role = 'owner' and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can invite owners' using errcode = '42501';
  end if;
  -- A member acting through an API key has no user: the inviter stays null.
  if v_inviter is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_inviter
  ) then
    v_inviter := null;
  end if;
  -- Members are listed to owners and admins already, so saying so reveals nothing about other accounts.
  if exists (
    select 1 from app_public.memberships m join app_public.users u on u.id = m.user_id
    where m.tenant_id = v_tenant_id and u.email = v_email
  ) then
    raise exception 'That user is already a member of this tenant' using errcode = '23505';
  end if;

  -- Whether the address has an account or not, the answer is the same: a pending invitation that the
  -- person accepts with the token emailed to them (acceptInvitation). Inviting again refreshes it.
  update app_public.invitations i
    set role = v_role, invited_by = v_inviter
    where i.tenant_id = v_tenant_id and i.email = v_email and i.accepted_at is null and i.revoked_at is null
    returning i.* into v_invitation;
  if v_invitation.id is null then
    begin
      insert into app_public.invitations (tenant_id, email, role, invited_by)
        values (v_tenant_id, v_email, v_role, v_inviter)
        returning * into v_invitation;
    exception when unique_violation then
      raise exception 'That email has just been invited' using errcode = '23505';
    end;
  end if;
  v_invitation := app_private.issue_invitation_token(v_invitation.id);
  return (null, v_invitation.id, null, v_email, v_role)::app_public.invite_result;
end;
$$;

comment on function app_public.invite_member(text, text) is 'Invites someone to the current tenant with a role (default agent): emails them a token, valid 7 days and once, that they accept with acceptInvitation while logged in with this address, verified. Nobody joins without accepting, and the answer is the same whether the address has an account or not. Inviting a pending address again updates the role and sends a new token (the old one stops working). Owners and admins only; only owners can invite owners. Errors: 42501 not allowed; 22023 invalid email or role; 23505 already a member; 55000 an invitation went to that address less than a minute ago.';

grant execute on function app_public.invite_member(text,text) to :DATABASE_VISITOR;
--! EndIncluded identity/invite_member.sql
--! Included identity/register.sql
create or replace function app_public.register(
  email text,
  password text,
  business_name text default null,
  first_name text default null,
  last_name text default null,
  timezone text default null
) returns app_public.jwt_token
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email public.citext := app_private.validate_email(register.email);
  v_business_name text := nullif(pg_catalog.btrim(register.business_name), '');
  v_timezone text := coalesce(nullif(pg_catalog.btrim(register.timezone), ''), 'America/New_York');
  v_user app_public.users;
  v_tenant_id uuid;
  v_session app_public.user_sessions;
begin
  perform app_private.validate_password(register.password);
  perform app_private.validate_timezone(v_timezone);
  if exists (select 1 from app_public.users u where u.email = v_email) then
    raise exception 'An account with this email already exists' using errcode = '23505';
  end if;
  if v_business_name is null and not exists (
    select 1 from app_public.invitations i where i.email = v_email and i.accepted_at is null and i.revoked_at is null
  ) then
    raise exception 'Business name is required' using errcode = '22023';
  end if;

  v_user := app_private.create_user(v_email::text, register.password);

  if v_business_name is not null then
    v_tenant_id := (app_private.create_tenant(v_business_name, v_user.id, v_timezone, null,
      register.first_name, register.last_name)).id;
  end if;

  -- Invitations to this address are not accepted here: whoever registers has not proved they own it.
  -- They verify it (the email sent now), then accept each invitation with its own token.
  perform app_private.send_verification_email(v_user.id);

  v_session := app_private.create_session(v_user.id, v_tenant_id);
  update app_public.user_status s set last_seen_at = pg_catalog.now() where s.user_id = v_user.id;
  return app_private.session_jwt(v_session.id);
end;
$$;

comment on function app_public.register(text, text, text, text, text, text) is 'Creates your account and logs you in, and emails you a token to verify your address (verifyEmail). With a business name it also creates your business (you are its owner). Invitations to your email are not accepted by registering: verify your address, then accept each one with the token from its email (acceptInvitation). The business name may be left out only when you have been invited; you then belong to no tenant until you accept. Errors: 22023 invalid email, weak password (at least 10 characters with a letter and a digit or symbol), unknown timezone or missing business name; 23505 when an account with this email already exists.';

grant execute on function app_public.register(text,text,text,text,text,text) to :DATABASE_VISITOR;
--! EndIncluded identity/register.sql
--! Included identity/accept_invitation.sql
create or replace function app_public.accept_invitation(token text) returns uuid
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_invitation app_public.invitations;
begin
  select u.* into v_user from app_public.users u where u.id = app_public.current_user_id();
  if v_user.id is null then
    raise exception 'You must be logged in to accept an invitation' using errcode = '28000';
  end if;
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if accept_invitation.token is not null and pg_catalog.length(accept_invitation.token) <= 200 then
    select i.* into v_invitation
    from app_private.invitation_tokens t
    join app_public.invitations i on i.tenant_id = t.tenant_id and i.id = t.invitation_id
    where t.token_hash = public.digest(accept_invitation.token, 'sha256')
      and i.accepted_at is null and i.revoked_at is null
      and i.expires_at > app_hidden.clock_now(i.tenant_id)
      and i.email = v_user.email
    for update of i;
  end if;
  -- Unknown, tampered, expired, used, revoked or someone else's: one answer, so a token reveals nothing.
  if v_invitation.id is null then
    raise exception 'This invitation is not valid: it may have expired, been used or revoked, or be meant for another email address'
      using errcode = 'P0002';
  end if;
  if v_user.email_verified_at is null then
    raise exception 'Verify your email address first: use the token in the verification email (resendVerificationEmail sends a new one)'
      using errcode = '55000';
  end if;
  if exists (select 1 from app_public.memberships m where m.tenant_id = v_invitation.tenant_id and m.user_id = v_user.id) then
    raise exception 'You are already a member of this tenant' using errcode = '23505';
  end if;
  perform app_private.add_member(v_invitation.tenant_id, v_user.id, v_invitation.role, v_invitation.invited_by);
  update app_public.invitations i set accepted_at = pg_catalog.now() where i.id = v_invitation.id;
  delete from app_private.invitation_tokens t where t.tenant_id = v_invitation.tenant_id and t.invitation_id = v_invitation.id;
  return v_invitation.tenant_id;
end;
$$;

comment on function app_public.accept_invitation(text) is 'Accepts an invitation with the token from its email: you join its tenant with the invited role, and the token is used up. You must be logged in with the invited email address, and have verified it. Returns the tenant''s id (switchTenant takes you there). Rate limited per client address (RATE_LIMITED). Errors: 28000 not logged in; P0002 the token is unknown, expired, used, revoked or meant for another address (one error for all); 55000 verify your email address first; 23505 already a member.';

grant execute on function app_public.accept_invitation(text) to :DATABASE_VISITOR;
--! EndIncluded identity/accept_invitation.sql
--! Included identity/resend_invitation.sql
create or replace function app_public.resend_invitation(invitation_id uuid) returns app_public.invitations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'resend invitations');
  v_invitation app_public.invitations;
begin
  select i.* into v_invitation from app_public.invitations i
  where i.id = resend_invitation.invitation_id and i.tenant_id = v_tenant_id
    and i.accepted_at is null and i.revoked_at is null;
  if not found then
    raise exception 'No pending invitation with that id in this tenant' using errcode = 'P0002';
  end if;
  if v_invitation.role = 'owner' and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can resend an invitation to be an owner' using errcode = '42501';
  end if;
  return app_private.issue_invitation_token(v_invitation.id);
end;
$$;

comment on function app_public.resend_invitation(uuid) is 'Emails a pending invitation again with a new token, valid 7 days; the previous token stops working. At most once a minute per invitation. Owners and admins only (owners for an invitation to be an owner). Errors: 42501 not allowed; P0002 no pending invitation with that id in this tenant; 55000 sent less than a minute ago.';

grant execute on function app_public.resend_invitation(uuid) to :DATABASE_VISITOR;
--! EndIncluded identity/resend_invitation.sql
--! Included identity/revoke_invitation.sql
create or replace function app_public.revoke_invitation(invitation_id uuid) returns app_public.invitations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'revoke invitations');
  v_invitation app_public.invitations;
begin
  select i.* into v_invitation from app_public.invitations i
  where i.id = revoke_invitation.invitation_id and i.tenant_id = v_tenant_id
    and i.accepted_at is null and i.revoked_at is null
  for update;
  if not found then
    raise exception 'No pending invitation with that id in this tenant' using errcode = 'P0002';
  end if;
  if v_invitation.role = 'owner' and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can revoke an invitation to be an owner' using errcode = '42501';
  end if;
  update app_public.invitations i set revoked_at = pg_catalog.now() where i.id = v_invitation.id
    returning i.* into v_invitation;
  delete from app_private.invitation_tokens t where t.tenant_id = v_tenant_id and t.invitation_id = v_invitation.id;
  return v_invitation;
end;
$$;

comment on function app_public.revoke_invitation(uuid) is 'Revokes a pending invitation: its token stops working at once. Owners and admins only (owners for an invitation to be an owner). Errors: 42501 not allowed; P0002 no pending invitation with that id in this tenant.';

grant execute on function app_public.revoke_invitation(uuid) to :DATABASE_VISITOR;
--! EndIncluded identity/revoke_invitation.sql
--! Included identity/pending_invitations.sql
create or replace function app_public.pending_invitations() returns setof app_public.invitations
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'see invitations');
begin
  return query
    select i.* from app_public.invitations i
    where i.tenant_id = v_tenant_id and i.accepted_at is null and i.revoked_at is null
    order by i.created_at desc, i.id;
end;
$$;

comment on function app_public.pending_invitations() is 'The current tenant''s invitations that are neither accepted nor revoked, newest first (expired ones included: resendInvitation renews them). Owners and admins only. Errors: 28000 not logged in; 42501 not allowed.';

grant execute on function app_public.pending_invitations() to :DATABASE_VISITOR;
--! EndIncluded identity/pending_invitations.sql
--! Included identity/verify_email.sql
create or replace function app_public.verify_email(token text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user_id uuid;
begin
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if verify_email.token is not null and pg_catalog.length(verify_email.token) <= 200 then
    delete from app_private.email_verification_tokens t
    using app_public.users u
    where t.token_hash = public.digest(verify_email.token, 'sha256')
      and t.expires_at > pg_catalog.now()
      and u.id = t.user_id and u.email = t.email
    returning t.user_id into v_user_id;
  end if;
  if v_user_id is null then
    raise exception 'This verification token is not valid: it may have expired or been used already'
      using errcode = 'P0002';
  end if;
  update app_public.users u set email_verified_at = pg_catalog.now()
    where u.id = v_user_id and u.email_verified_at is null;
  return true;
end;
$$;

comment on function app_public.verify_email(text) is 'Confirms an account''s email address with the token from the verification email (no login needed); the token is used up. Rate limited per client address (RATE_LIMITED). Errors: P0002 the token is unknown, expired or used (one error for all).';

grant execute on function app_public.verify_email(text) to :DATABASE_VISITOR;
--! EndIncluded identity/verify_email.sql
--! Included identity/resend_verification_email.sql
create or replace function app_public.resend_verification_email() returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user app_public.users;
begin
  select u.* into v_user from app_public.users u where u.id = app_public.current_user_id();
  if v_user.id is null then
    raise exception 'You must be logged in to ask for a verification email' using errcode = '28000';
  end if;
  if v_user.email_verified_at is not null then
    raise exception 'Your email address is already verified' using errcode = '55000';
  end if;
  if exists (
    select 1 from app_private.email_verification_tokens t
    where t.user_id = v_user.id and t.created_at > pg_catalog.now() - interval '1 minute'
  ) then
    raise exception 'A verification email was sent less than a minute ago: wait a minute before asking again' using errcode = '55000';
  end if;
  perform app_private.send_verification_email(v_user.id);
  return true;
end;
$$;

comment on function app_public.resend_verification_email() is 'Emails you a new verification token (the previous one stops working). At most once a minute. Errors: 28000 not logged in; 55000 already verified, or one was sent less than a minute ago.';

grant execute on function app_public.resend_verification_email() to :DATABASE_VISITOR;
--! EndIncluded identity/resend_verification_email.sql
