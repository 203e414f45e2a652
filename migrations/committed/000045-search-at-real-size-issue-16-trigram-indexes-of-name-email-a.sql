--! Previous: sha1:a7346039486d8a696b5b78e19666c02ed36f9d9f
--! Hash: sha1:3f99f8d671a0c9788df41a2f8b28266c813fc866
--! Message: Search at real size (issue 16): trigram indexes of name, email and phone led by tenant_id (btree_gin); the hits come from an owner function that can use them (the text conditions are not leakproof, so under row-level security they could not), and search_leads is inlined into PostGraphile's query so that only the leads of the page are read (200,000-lead tenant: 395 ms to 153 ms)

-- Search at real size (issue 16): the hits (ids and ranks) come from an owner function that can use the
-- trigram indexes, now led by tenant_id; search_leads is inlined into the query PostGraphile sends, so
-- that only the leads of the page are read. (btree_gin is created by afterReset.sql on new databases; this
-- line creates it on older ones, which needs a role allowed to.)
create extension if not exists btree_gin with schema public;
--! Included crm/lead_search_hits.sql
create or replace function app_hidden.lead_search_hits(query text,
  out lead_id uuid, out rank integer, out similarity real, out created_at timestamptz) returns setof record
  -- SECURITY DEFINER: the text conditions (ILIKE, trigram similarity) are not leakproof, so under the
  -- row-level security of a request PostgreSQL may not use them in an index scan before the tenant
  -- check, and would read every lead of the tenant. Here the tenant is explicit (that of the caller, from
  -- app_public.current_tenant_id()), and the trigram indexes led by tenant_id answer the text.
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
  -- Always a custom plan: a generic plan ignores the actual tenant and search text.
  set plan_cache_mode = force_custom_plan
as $$
declare
  v_query text := pg_catalog.btrim(lead_search_hits.query);
  v_digits text;
  v_tenant uuid := app_public.current_tenant_id();
begin
  if v_query is null or v_query = '' then
    raise exception 'Search text (query) must not be blank' using errcode = '22023';
  end if;
  if pg_catalog.length(v_query) > 200 then
    raise exception 'Search text (query) must be at most 200 characters' using errcode = '22023';
  end if;
  v_digits := app_hidden.phone_search_digits(v_query);
  return query
    select l.id,
           case
             when pg_catalog.lower(l.full_name) = pg_catalog.lower(v_query) or pg_catalog.lower(l.email::text) = pg_catalog.lower(v_query)
               or (pg_catalog.length(v_digits) >= 7 and pg_catalog.right(l.phone::text, pg_catalog.length(v_digits)) = v_digits) then 3
             when l.full_name operator(pg_catalog.~~*) (app_hidden.like_escape(v_query) || '%')
               or l.full_name operator(pg_catalog.~~*) ('% ' || app_hidden.like_escape(v_query) || '%')
               or l.email::text operator(pg_catalog.~~*) (app_hidden.like_escape(v_query) || '%') then 2
             when l.full_name operator(pg_catalog.~~*) ('%' || app_hidden.like_escape(v_query) || '%')
               or l.email::text operator(pg_catalog.~~*) ('%' || app_hidden.like_escape(v_query) || '%')
               or l.phone::text operator(pg_catalog.~~) ('%' || v_digits || '%') then 1
             else 0
           end,
           public.similarity(l.full_name, v_query),
           l.created_at
      from app_public.leads l
     where l.tenant_id = v_tenant
       and l.deleted_at is null
       and (l.full_name operator(pg_catalog.~~*) ('%' || app_hidden.like_escape(v_query) || '%')
            or l.full_name operator(public.%) v_query
            or l.email::text operator(pg_catalog.~~*) ('%' || app_hidden.like_escape(v_query) || '%')
            or (v_digits is not null and l.phone::text operator(pg_catalog.~~) ('%' || v_digits || '%')));
end;
$$;

comment on function app_hidden.lead_search_hits(text) is 'The live leads of the current tenant that a search text matches (see app_public.search_leads), with their rank (3 exact name, email or phone number; 2 a name, name word or email starting with the text; 1 the text anywhere in the name or email, or its digits in the phone number; 0 only a similar name), the trigram similarity of the name and the creation time. 22023 for a blank text or one longer than 200 characters. Only ids and ranks: search_leads reads the leads of the page it shows.';

grant execute on function app_hidden.lead_search_hits(text) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_search_hits.sql
--! Included crm/search_leads.sql
create or replace function app_public.search_leads(query text) returns setof app_public.leads
  -- SQL, without SET options and not SECURITY DEFINER, so that PostgreSQL inlines it into the query
  -- PostGraphile sends: the hits (ids and ranks, found by app_hidden.lead_search_hits through the
  -- tenant-led trigram indexes) are sorted, the LIMIT of the page applies, and only the leads shown
  -- are read, under the row-level security of the caller. Every name is schema-qualified (the
  -- search path is that of the caller).
  language sql stable
as $$
  select l.*
    from app_hidden.lead_search_hits(search_leads.query) h
    join app_public.leads l on l.id = h.lead_id
   order by h.rank desc, h.similarity desc, h.created_at desc, h.lead_id
$$;

comment on function app_public.search_leads(text) is 'Finds the current tenant''s live leads by name, email or phone, best matches first: exact name, email or phone number; then names or emails starting with the text (or a name word starting with it); then the text anywhere in the name or email, or its digits anywhere in the phone number; then names that are merely similar (trigram similarity, for typos). Within a rank, more similar names and newer leads come first. The text is plain text: %, _, quotes and anything else match themselves. Example: search_leads(''(212) 555-0101''), search_leads(''smith''). Errors: 22023 for a blank query or one longer than 200 characters.';

grant execute on function app_public.search_leads(text) to :DATABASE_VISITOR;
--! EndIncluded crm/search_leads.sql
drop index if exists app_public.leads_full_name_trgm;
drop index if exists app_public.leads_email_trgm;
drop index if exists app_public.leads_phone_trgm_search;
create index leads_tenant_full_name_trgm on app_public.leads using gin (tenant_id, full_name public.gin_trgm_ops);
create index leads_tenant_email_trgm on app_public.leads using gin (tenant_id, (email::text) public.gin_trgm_ops);
create index leads_tenant_phone_trgm on app_public.leads using gin (tenant_id, (phone::text) public.gin_trgm_ops);
comment on index app_public.leads_tenant_full_name_trgm is 'Search by name (ILIKE and trigram similarity) within a tenant: search_leads and the text of find_leads.';
comment on index app_public.leads_tenant_email_trgm is 'Search by email (ILIKE) within a tenant: search_leads and the text of find_leads.';
comment on index app_public.leads_tenant_phone_trgm is 'Search by phone digits (LIKE) within a tenant: search_leads and the text of find_leads.';
