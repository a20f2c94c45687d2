// A customer's children paged with @connection (each fragment @refetchable through Node).
import { graphql } from "relay-runtime";

export const contacts = graphql`
  fragment CustomerChildren_contacts on Customer
  @refetchable(queryName: "CustomerChildrenContactsPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    displayName
    contactsConnection(first: $count, after: $cursor)
      @connection(key: "CustomerChildren_contactsConnection") {
      totalCount
      edges {
        node {
          id
          firstName
          lastName
          updatedAt
        }
      }
    }
  }
`;

export const facilities = graphql`
  fragment CustomerChildren_facilities on Customer
  @refetchable(queryName: "CustomerChildrenFacilitiesPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    facilitiesConnection(first: $count, after: $cursor)
      @connection(key: "CustomerChildren_facilitiesConnection") {
      edges {
        node {
          id
          name
          ...CustomerChildren_assets
        }
      }
    }
  }
`;

export const assets = graphql`
  fragment CustomerChildren_assets on Facility
  @refetchable(queryName: "CustomerChildrenAssetsPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 50 }, cursor: { type: "String" }) {
    assetsConnection(first: $count, after: $cursor)
      @connection(key: "CustomerChildren_assetsConnection") {
      totalCount
      edges {
        node {
          id
          kind
          installDate
        }
      }
    }
  }
`;

export const credentials = graphql`
  fragment CustomerChildren_credentials on Customer
  @refetchable(queryName: "CustomerChildrenCredentialsPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    credentialsConnection(first: $count, after: $cursor)
      @connection(key: "CustomerChildren_credentialsConnection") {
      edges {
        node {
          id
          name
          hasPassword
        }
      }
    }
  }
`;

export const query = graphql`
  query CustomerChildrenQuery($id: ID!) {
    customer(id: $id) {
      ...CustomerChildren_contacts
      ...CustomerChildren_facilities
      ...CustomerChildren_credentials
    }
  }
`;
