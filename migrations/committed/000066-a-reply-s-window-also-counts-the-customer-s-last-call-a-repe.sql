--! Previous: sha1:24a34db735a80d2c9df642e130ea00b1b2471f16
--! Hash: sha1:df8a08f12ef6c7b2b0915f5962e3a371d6d532ae
--! Message: A reply's window also counts the customer's last call (a repeat missed call reuses the active conversation without touching it, so its auto-response was measured from the first contact and held to legal hours); queue_sms's source file states its grant

--! Included messaging/sms_customer_contact_at.sql
create or replace function app_private.sms_customer_contact_at(tenant_id uuid, conversation_id uuid, to_phone text)
  returns timestamptz
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  -- The latest of: their last text in it, when they started it (a call, or a first text, which also
  -- sets their last text), and their last call to its business number (a repeat call reuses the
  -- active conversation without touching it).
  select greatest(coalesce(c.last_customer_message_time, c.created_at),
                  (select pg_catalog.max(k.start_time) from app_public.calls k
                    where k.tenant_id = c.tenant_id and k.customer_phone = c.customer_phone
                      and k.business_phone = c.business_phone))
    from app_public.conversations c
   where c.tenant_id = sms_customer_contact_at.tenant_id
     and c.id = sms_customer_contact_at.conversation_id
     and c.customer_phone = sms_customer_contact_at.to_phone
     and c.started_by = 'customer';
$$;

comment on function app_private.sms_customer_contact_at(uuid, uuid, text) is $$The last time the customer reached the business in this conversation (their last text in it, its start by their call or text, or their last call to its business number), when the conversation is one the customer started, with this phone, in this tenant; null otherwise. A reply (purpose conversation or auto_response) goes at once only within app_private.sms_reply_window() of that moment; later it is held to legal sending hours and caps like marketing; without such a conversation it is refused (tg_messages__guard_outbound).$$;
--! EndIncluded messaging/sms_customer_contact_at.sql
--! Included messaging/queue_sms.sql
create or replace function app_public.queue_sms(lead_id uuid, body text, purpose text default 'marketing', idempotency_key text default null)
  returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'send texts');
  v_lead app_public.leads;
  v_from text;
begin
  -- A text a member starts toward a lead is marketing, whatever it says: held to the lead's legal
  -- sending hours and caps. (notification was accepted here and skipped both: it is for members.)
  if queue_sms.purpose is null or queue_sms.purpose <> 'marketing' then
    raise exception 'purpose must be marketing, got %: a text to a lead is marketing, held to legal sending hours and caps (notification texts go only to members of the business; answer a customer with sendConversationReply)',
      coalesce(pg_catalog.quote_literal(queue_sms.purpose), 'nothing')
      using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
  where l.tenant_id = v_tenant_id and l.id = queue_sms.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', queue_sms.lead_id using errcode = 'P0002';
  end if;
  if v_lead.phone is null then
    raise exception 'This lead has no phone number to text' using errcode = '22023';
  end if;
  select p.phone_number into v_from from app_public.phone_numbers p
  where p.tenant_id = v_tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
  order by p.date_provisioned, p.id limit 1;
  if v_from is null then
    raise exception 'This business has no active phone number that can text: request one with requestPhoneNumber first'
      using errcode = '22023';
  end if;
  return app_private.queue_message(v_tenant_id, v_lead.phone, v_from, queue_sms.body, queue_sms.purpose, 'human', null,
    v_lead.id, queue_sms.idempotency_key);
end;
$$;

comment on function app_public.queue_sms(uuid, text, text, text) is 'Queues a marketing text to a lead from the first active number of the business (agents and up). It is held to the legal sending hours of the recipient and the per-state daily cap: the returned message says in scheduled_for when it will go. purpose must be marketing (the default; kept as a parameter for existing clients): a text a member starts toward a lead is never a notification or a reply. idempotency_key (optional) makes a retried call return the first message. Errors: SB001 the number is on the do-not-contact list; 22023 no phone, no active number, an empty body or one over 1600 characters, a purpose other than marketing; P0002 no such lead; 42501 not an agent of the tenant.';
grant execute on function app_public.queue_sms(uuid, text, text, text) to :DATABASE_VISITOR;
--! EndIncluded messaging/queue_sms.sql
